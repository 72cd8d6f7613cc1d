"""Layer 4, bytes on disk: atomic writes and hashing, and the bundle format (one safetensors file
per task, saved from and loaded into a `ContinualModel`).

May import `core`, `metrics` and `data`.
"""
