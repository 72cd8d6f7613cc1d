"""Layer 3, task data: strict file parsing (JSONL, JSON, CSV, TSV, parquet, hub datasets), strict
JSON, and `DataSpec` / `TaskData`, what a task's splits are and how they load.

May import `core` and `metrics`.
"""
