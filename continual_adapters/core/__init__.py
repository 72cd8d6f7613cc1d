"""Layer 1, the model: configs, the Houlsby adapter, the architecture table, injection, the
continual model and the methods' module sets (baselines).

Imports nothing else of cadapt. Importing this package does not import torch; its modules do.
"""
