"""Image sources (train / val / test splits of [C, H, W] images in [0, 1]) and canvas transforms."""
from arc.data.canvas import CanvasConfig, CanvasError, apply_canvas
from arc.data.images import ImageReadError
from arc.data.sources import SPLITS, ImageSource, ImageSplit, SourceError, open_source

__all__ = [
    "SPLITS",
    "CanvasConfig",
    "CanvasError",
    "ImageReadError",
    "ImageSource",
    "ImageSplit",
    "SourceError",
    "apply_canvas",
    "open_source",
]
