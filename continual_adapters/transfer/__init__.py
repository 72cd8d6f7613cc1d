"""Layer 7, tasks leaving or entering a registry: `cadapt export` / `cadapt import` archives and the
AdapterHub export.

Sits above `registry` because both formats read and write registry records. May import every
layer below it.
"""
