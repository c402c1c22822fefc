"""The image-space reference: a small ResNet on ARC's own image splits (issue 11's pixel CNN).

:class:`PixelDataModule` serves ARC's train / val / test images (:class:`SourceDataModule`: the same
source, splits and seed) as [C, H, W] tensors in [-1, 1] (image · 2 − 1, the INRs' target range); an
unreadable image (:class:`arc.data.images.ImageReadError`) is dropped from its batch and counted. The
images of a batch must share one size (pass ``data.canvas`` for a source of mixed sizes).
:func:`pixel_resnet` is the network (plain ``nn.Module``): a 3×3 stem, one stage of torchvision
``BasicBlock`` s per width (stride 2 from the second), global average pooling, a linear head.
:class:`PixelCNNClassifier` is the recipe: cross-entropy, AdamW, the log keys of the weight classifiers.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.models.resnet import BasicBlock

from arc.baseline_training.weight_mlp import WeightClassifier
from arc.baseline_training.weights_data import BaselineDataModule
from arc.data.images import ImageReadError
from arc.seeding import derive_seed, run_seed

log = logging.getLogger(__name__)


class SplitImages(Dataset):
    """(image [C, H, W] in [-1, 1], label) of one split; None for an unreadable image (counted in ``skipped``)."""

    def __init__(self, split: Sequence) -> None:
        self.split, self.skipped = split, set()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Optional[tuple[Tensor, int]]:
        try:
            image, label = self.split[i]
        except ImageReadError as err:
            if i not in self.skipped:
                self.skipped.add(i)
                log.warning("skipping image %d: %s", i, err)
            return None
        return image.float() * 2 - 1, int(label)


def collate_images(items: list[Optional[tuple[Tensor, int]]]) -> tuple[Tensor, Tensor]:
    """Stack the readable items of a batch: images [B, C, H, W], labels [B]."""
    kept = [item for item in items if item is not None]
    sizes = {tuple(image.shape) for image, _ in kept}
    if len(sizes) > 1:
        raise ValueError(f"images of one batch differ in size ({sorted(sizes)[:3]}...): set data.canvas "
                         "({size: S}) to serve them on one canvas")
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack([image for image, _ in kept]), torch.tensor([label for _, label in kept])


class PixelDataModule(BaselineDataModule):
    """ARC's image splits as image batches (the arguments of :class:`~arc.baseline_training.weights_data.BaselineDataModule`).
    ``latent_dim`` is the image channel count (the width of one input element, linked into the model)."""

    collate_fn = staticmethod(collate_images)

    @property
    def latent_dim(self) -> int:
        return self.source.channels

    def dataset(self, split: str) -> Dataset:
        return SplitImages(self.source.split(split))

    def representation_metrics(self) -> dict[str, float]:
        """``repr/params_per_sample``: the values of one image, pixels × channels (of the first readable train
        image: a batch's images share one size), written into a run's metrics.json by the CLI."""
        train = self.source.split("train")
        for i in range(len(train)):
            try:
                image, _ = train[i]
            except ImageReadError:
                continue
            return {"repr/params_per_sample": float(image.numel())}
        raise ValueError(f"{self.source_spec}: no readable train image")


def pixel_resnet(channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 1) -> nn.Sequential:
    """[N, channels, H, W] -> logits [N, classes]: 3×3 stem, ``blocks`` BasicBlocks per width (stride 2 from the
    second stage), global average pooling, linear head."""
    if channels < 1 or num_classes < 2 or not widths or min(widths) < 1 or blocks < 1:
        raise ValueError(f"pixel_resnet needs channels >= 1, num_classes >= 2, positive widths and blocks >= 1; got "
                         f"{channels}, {num_classes}, {list(widths)}, {blocks}")
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                               nn.ReLU(inplace=True)]
    width = widths[0]
    for stage, out in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            downsample = None
            if stride != 1 or width != out:
                downsample = nn.Sequential(nn.Conv2d(width, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            layers.append(BasicBlock(width, out, stride=stride, downsample=downsample))
            width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


class PixelCNNClassifier(WeightClassifier):
    """Train :func:`pixel_resnet` on image batches.

    num_classes, latent_dim (the image channels), class_names: linked from the DataModule by the CLI.
    widths, blocks: the network. lr, weight_decay: AdamW; cosine decay over ``trainer.max_epochs``.
    seed: initialisation seed (default: the training seed).
    """

    def __init__(self, num_classes: int, latent_dim: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 1,
                 lr: float = 2e-3, weight_decay: float = 5e-2, class_names: Optional[list[str]] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(run_seed(seed), "init"))
            self.net = pixel_resnet(latent_dim, num_classes, tuple(widths), blocks)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def configure_optimizers(self) -> dict:
        return self.adamw_cosine()
