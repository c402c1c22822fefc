"""arc: classify images through Anchored Representation Clouds."""
from arc.cloud import CloudBatch, CloudError

__all__ = ["CloudBatch", "CloudError"]
__version__ = "0.1.0"
