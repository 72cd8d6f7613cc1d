"""Layer 8, the continual stream: the runner (`add-task`'s protocol), the audit, task
identification, scenarios and prediction over registered tasks.

May import every layer below it.
"""
