"""Image generation: requests, models, the fair queue and the single GPU worker.

This package knows nothing of Discord or storage; it takes and returns plain
frozen dataclasses. Importing it does not import torch: the heavy modules
(`loader`, `worker`, `pipelines`) import it when they are used.
"""
