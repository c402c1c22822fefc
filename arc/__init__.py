"""arc: classify images through Anchored Representation Clouds."""
import os

# MKL's strict conditional numerical reproducibility: matmuls give the same bits for any number
# of threads (read at MKL's first call; a value the user set wins). See docs/architecture.md.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from arc.cloud import CloudBatch, CloudError

__all__ = ["CloudBatch", "CloudError"]
__version__ = "0.1.0"
