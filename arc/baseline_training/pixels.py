"""The sample-space reference: a small ResNet on ARC's own splits (issue 11's pixel CNN), in D = 1, 2, 3.

:class:`PixelDataModule` serves ARC's train / val / test samples (:class:`SourceDataModule`: the same
source, splits and seed) as [C, *S] tensors in [-1, 1] (sample · 2 − 1, the INRs' target range): images
[C, H, W], 1-D signals [C, L], 3-D volumes [C, D, H, W]; an unreadable sample
(:class:`arc.data.images.ImageReadError`) is dropped from its batch and counted. The samples of a batch
must share one shape (images: pass ``data.canvas``; signals and volumes: the source option ``length`` /
``shape``). :func:`pixel_resnet` is the network (plain ``nn.Module``): a 3-wide stem, one stage of
residual blocks per width (stride 2 from the second), global average pooling, a linear head; in 2-D the
blocks are torchvision's ``BasicBlock`` (so 2-D results stay), in 1-D and 3-D :class:`ResidualBlock`,
the same block with ``Conv1d`` / ``Conv3d``. :class:`PixelCNNClassifier` is the recipe: cross-entropy,
AdamW, the log keys of the weight classifiers; its D is the data's unless given.
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

log = logging.getLogger(__name__)


class SplitImages(Dataset):
    """(sample [C, *S] in [-1, 1], label) of one split; None for an unreadable sample (counted in ``skipped``)."""

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
    """Stack the readable items of a batch: samples [B, C, *S], labels [B]."""
    kept = [item for item in items if item is not None]
    sizes = {tuple(image.shape) for image, _ in kept}
    if len(sizes) > 1:
        if {len(size) for size in sizes} == {3}:
            raise ValueError(f"images of one batch differ in size ({sorted(sizes)[:3]}...): set data.canvas "
                             "({size: S}) to serve them on one canvas")
        raise ValueError(f"samples of one batch differ in shape ({sorted(sizes)[:3]}...): set the source option length "
                         "(1-D) or shape (3-D), e.g. --data.source_options \"{length: 128}\", to serve them at one shape")
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack([image for image, _ in kept]), torch.tensor([label for _, label in kept])


class PixelDataModule(BaselineDataModule):
    """ARC's splits as sample batches (the arguments of :class:`~arc.baseline_training.weights_data.BaselineDataModule`).
    ``latent_dim`` is the channel count (the width of one input element, linked into the model); ``dims`` D."""

    collate_fn = staticmethod(collate_images)

    @property
    def latent_dim(self) -> int:
        return self.source.channels

    @property
    def dims(self) -> int:
        """D, the samples' spatial axes (1 signals, 2 images, 3 volumes)."""
        return self.source.dims

    def dataset(self, split: str) -> Dataset:
        return SplitImages(self.source.split(split))

    def representation_metrics(self) -> dict[str, float]:
        """``repr/params_per_sample``: the values of one sample, points × channels (of the first readable train
        sample: a batch's samples share one shape), written into a run's metrics.json by the CLI."""
        train = self.source.split("train")
        for i in range(len(train)):
            try:
                image, _ = train[i]
            except ImageReadError:
                continue
            return {"repr/params_per_sample": float(image.numel())}
        raise ValueError(f"{self.source_spec}: no readable train image")


CONV = {1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d), 2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
        3: (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d)}  # D -> (convolution, batch norm, pooling)


class ResidualBlock(nn.Module):
    """torchvision's ``BasicBlock`` in D dimensions: relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x)), the first
    convolution of stride ``stride``, the shortcut a strided 1-wide convolution + batch norm when the shape changes.
    [N, inp, *S] -> [N, out, *ceil(S / stride)]."""

    def __init__(self, inp: int, out: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, norm, _ = CONV[dims]
        self.conv1, self.bn1 = conv(inp, out, 3, stride=stride, padding=1, bias=False), norm(out)
        self.conv2, self.bn2 = conv(out, out, 3, padding=1, bias=False), norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(conv(inp, out, 1, stride=stride, bias=False), norm(out))
                         if stride != 1 or inp != out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def pixel_resnet(channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 1,
                 dims: int = 2) -> nn.Sequential:
    """[N, channels, *S] (D = ``dims`` axes) -> logits [N, classes]: 3-wide stem, ``blocks`` residual blocks per
    width (stride 2 from the second stage; torchvision BasicBlocks in 2-D), global average pooling, linear head."""
    if channels < 1 or num_classes < 2 or not widths or min(widths) < 1 or blocks < 1 or dims not in CONV:
        raise ValueError(f"pixel_resnet needs channels >= 1, num_classes >= 2, positive widths, blocks >= 1 and dims in "
                         f"1, 2, 3; got {channels}, {num_classes}, {list(widths)}, {blocks}, {dims}")
    conv, norm, pool = CONV[dims]
    layers: list[nn.Module] = [conv(channels, widths[0], 3, padding=1, bias=False), norm(widths[0]), nn.ReLU(inplace=True)]
    width = widths[0]
    for stage, out in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            if dims != 2:
                layers.append(ResidualBlock(width, out, stride, dims))
            else:
                downsample = None
                if stride != 1 or width != out:
                    downsample = nn.Sequential(nn.Conv2d(width, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                layers.append(BasicBlock(width, out, stride=stride, downsample=downsample))
            width = out
    layers += [pool(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


class PixelCNNClassifier(WeightClassifier):
    """Train :func:`pixel_resnet` on sample batches.

    num_classes, latent_dim (the channels), class_names: linked from the DataModule by the CLI.
    widths, blocks: the network. dims: the samples' D (1, 2, 3); None: the DataModule's ``dims``, read when the
    trainer configures the model (then recorded, so a checkpoint rebuilds it). lr, weight_decay: AdamW; cosine
    decay over ``trainer.max_epochs``. seed: initialisation seed (default: the training seed).
    """

    def __init__(self, num_classes: int, latent_dim: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 1,
                 lr: float = 2e-3, weight_decay: float = 5e-2, class_names: Optional[list[str]] = None,
                 seed: Optional[int] = None, dims: Optional[int] = None) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        self.net: Optional[nn.Sequential] = None
        if dims is not None:
            self._build(dims)

    def _build(self, dims: int) -> None:
        """The network for samples of ``dims`` axes, drawn from the initialisation seed."""
        self.net = self.initialised(self.hparams.seed, lambda: pixel_resnet(
            self.hparams.latent_dim, self.hparams.num_classes, tuple(self.hparams.widths), self.hparams.blocks, dims))
        self.hparams.dims = dims

    def configure_model(self) -> None:
        """Build the network for the DataModule's D (``dims`` None), before the optimiser and any checkpoint."""
        if self.net is None:
            data = self.trainer.datamodule if self._trainer is not None else None
            if data is None or not hasattr(data, "dims"):
                raise ValueError("PixelCNNClassifier: set model.dims (1, 2 or 3), or train it with a PixelDataModule")
            self._build(int(data.dims))

    def forward(self, samples: Tensor) -> Tensor:
        if self.net is None:
            raise RuntimeError("the network is not built yet: give dims, or let the trainer configure the model")
        return self.net(samples)

    def configure_optimizers(self) -> dict:
        return self.adamw_cosine()
