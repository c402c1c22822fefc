"""arc: classify images through Anchored Representation Clouds."""
import os
from typing import TYPE_CHECKING

# MKL's strict conditional numerical reproducibility: matmuls give the same bits for any number
# of threads (read at MKL's first call; a value the user set wins). See docs/architecture.md.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from arc.cloud import CloudBatch, CloudError

if TYPE_CHECKING:
    import torch

    from arc.inference import Predictor

__all__ = ["CloudBatch", "CloudError", "load"]
__version__ = "0.1.0"


def load(path: "str | os.PathLike", device: "torch.device | str | None" = None) -> "Predictor":
    """A trained model (a checkpoint or a bundle directory) ready to ``predict`` raw images: see
    :func:`arc.inference.load`. Imported on first use, so ``import arc`` stays light."""
    from arc.inference import load as load_model

    return load_model(path, device)
