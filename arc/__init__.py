"""arc: classify images through Anchored Representation Clouds."""
import os
from typing import TYPE_CHECKING

# MKL's strict conditional numerical reproducibility: matmuls give the same bits for any number
# of threads (read at MKL's first call; a value the user set wins). See docs/architecture.md.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def _keep_freed_blocks() -> None:
    """Ask glibc's malloc to keep freed blocks up to 64 MiB (and 256 MiB of free heap top) for reuse.

    By default blocks above 128 KiB are mapped and unmapped per allocation, so every step's fresh
    activations page-fault again: 1,438 faults per step and 3.2x the time for a SIREN group on one thread
    (``docs/benchmarks.md``, "Page faults"). 64 MiB, not 32, so that autograd activations of a 427x640
    photo (68k x 136 floats, 37 MB) are reused too: 0.3-0.6 M faults instead of 7-8 M and 1.7x faster in the
    re-created original loop (``docs/benchmarks.md``, session 7). Only on glibc; a ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` the user set wins.
    """
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


_keep_freed_blocks()

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
