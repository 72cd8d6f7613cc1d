"""Layer 9, what people read: task details, the stream report, method comparisons and plots.

May import every layer below it.
"""
