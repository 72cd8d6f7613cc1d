"""Layer 2, pure functions over numbers: per-task scores, continual-learning metrics over an
accuracy matrix, the parameter-growth ledger.

May import `core` (for errors) and nothing else of cadapt; never torch.
"""
