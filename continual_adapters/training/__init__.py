"""Layer 6, training one task's modules: the loop (AdamW, warm-up and decay, best epoch on
validation), evaluation, and data-parallel launches.

May import `core`, `metrics`, `data` and `files`.
"""
