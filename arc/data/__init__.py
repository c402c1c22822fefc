"""Image sources (train / val / test splits of [C, H, W] images in [0, 1]), canvas transforms, and the
clouds of a store as a torch Dataset."""
from arc.data.canvas import CanvasConfig, CanvasError, apply_canvas
from arc.data.clouds import CloudDataset, collate_clouds
from arc.data.images import ImageReadError
from arc.data.sources import SPLITS, ImageSource, ImageSplit, SourceError, open_source

__all__ = [
    "SPLITS",
    "CanvasConfig",
    "CanvasError",
    "CloudDataset",
    "ImageReadError",
    "ImageSource",
    "ImageSplit",
    "SourceError",
    "apply_canvas",
    "collate_clouds",
    "open_source",
]
