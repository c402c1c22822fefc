"""The ARC classifier network without Lightning: latent normaliser -> PTv3 -> mean pool -> head.

``ARCModel(batch)`` maps a :class:`~arc.cloud.CloudBatch` of raw latents to class logits. It is
what benchmarks, inference and other training loops use; :class:`arc.classifier.ARCClassifier`
trains it with Lightning.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import replace
from typing import Any, Callable, Literal, Sequence, Union

import torch
from torch import Tensor, nn

from arc import ragged
from arc.cloud import CloudBatch, CloudError
from arc.seeding import derive_seed

__all__ = ["ARCModel", "BackboneFactory", "ClassifierConfigError", "LatentNormaliser", "NORMALISATIONS",
           "backbone_factory", "backbone_spec", "default_backbone", "mean_pool", "view_log_probs"]

NORMALISATIONS = ("per_dim", "whole", "none")
Normalisation = Literal["per_dim", "whole", "none"]
BackboneFactory = Callable[[int], nn.Module]
"""Builds the backbone from the latent size z (its ``in_channels``); the module has ``out_channels``."""


class ClassifierConfigError(ValueError):
    """An invalid classifier setting (model, training recipe or latent statistics)."""


def default_backbone(in_channels: int) -> nn.Module:
    """The paper's PTv3 (thesis App. B): the defaults of :class:`ptv3.PointTransformerV3`."""
    from ptv3 import PointTransformerV3

    return PointTransformerV3(in_channels)


def backbone_spec(factory: BackboneFactory | None) -> dict[str, Any] | None:
    """The ``{"class_path", "init_args"}`` description of a backbone factory (a class or a ``functools.partial``
    of one), the form configs use and checkpoints store; None for the default backbone."""
    if factory is None or isinstance(factory, dict):
        return factory
    args: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        # jsonargparse's class_path factories are partial(instantiator, ..., cls, **init_args): the class is the
        # last positional argument; a user's partial has the class as its function and keywords only
        classes = [a for a in factory.args if isinstance(a, type)]
        if factory.args and len(classes) != 1:
            raise ClassifierConfigError("backbone: give a partial with keyword arguments only (in_channels is latent_dim)")
        factory, args = (classes[0] if classes else factory.func), dict(factory.keywords)
    if not isinstance(factory, type):
        raise ClassifierConfigError(f"backbone: expected a class or a functools.partial of one, got {factory!r}")
    return {"class_path": f"{factory.__module__}.{factory.__qualname__}", "init_args": args}


def backbone_factory(spec: BackboneFactory | dict[str, Any] | None) -> BackboneFactory:
    """The factory of a backbone given as a factory, a ``{"class_path", "init_args"}`` dict or None (default)."""
    if spec is None:
        return default_backbone
    if not isinstance(spec, dict):
        return spec
    if set(spec) - {"class_path", "init_args"} or "class_path" not in spec:
        raise ClassifierConfigError(f"backbone: expected {{class_path, init_args}}, got keys {sorted(spec)}")
    module, _, name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ClassifierConfigError(f"backbone: cannot import {spec['class_path']!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ClassifierConfigError(f"backbone: {spec['class_path']!r} is not a torch module class")
    return functools.partial(cls, **dict(spec.get("init_args") or {}))


def mean_pool(feat: Tensor, offset: Tensor) -> Tensor:
    """[B, C] mean of ``feat`` [M, C] over each cloud of the ragged layout ``offset`` [B] (cumulative ends)."""
    sizes = ragged.counts(offset)
    total = ragged.segment_sum(feat, ragged.batch_ids(sizes, feat.shape[0]), offset.numel())
    return total / sizes.clamp(min=1).unsqueeze(1).to(feat.dtype)


class LatentNormaliser(nn.Module):
    """Standardise raw latents [N, z] with train-only statistics, kept as buffers (so checkpoints carry them).

    mode: "per_dim" (a mean and std per latent dimension), "whole" (one scalar mean/std over all
    entries) or "none" (identity; no statistics needed).
    """

    def __init__(self, latent_dim: int, mode: Normalisation = "per_dim") -> None:
        super().__init__()
        if mode not in NORMALISATIONS:
            raise ClassifierConfigError(f"normalisation must be one of {list(NORMALISATIONS)}, got {mode!r}")
        self.latent_dim, self.mode = latent_dim, mode
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("std", torch.ones(latent_dim))
        self.register_buffer("ready", torch.tensor(False))
        self._ready = False  # a host copy of ``ready``: no device sync per forward
        self.register_load_state_dict_post_hook(LatentNormaliser._after_load)

    @staticmethod
    def _after_load(module: "LatentNormaliser", incompatible_keys) -> None:
        module._ready = bool(module.ready)

    @property
    def has_stats(self) -> bool:
        return self._ready

    def set_stats(self, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> None:
        """Set the per-dim mean [z] and population std [z]; "whole" pools them into one scalar; std >= 1e-6."""
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten().cpu()
        std = torch.as_tensor(std, dtype=torch.float64).flatten().cpu()
        if mean.numel() != self.latent_dim or std.numel() != self.latent_dim:
            raise ClassifierConfigError(f"latent stats must have {self.latent_dim} entries (latent_dim), "
                                   f"got mean {mean.numel()}, std {std.numel()}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or bool((std < 0).any()):
            raise ClassifierConfigError("latent stats must be finite with std >= 0")
        if self.mode == "whole":
            pooled = mean.mean()  # every dimension has the same number of entries
            std = ((std**2 + mean**2).mean() - pooled**2).clamp(min=0).sqrt().expand(self.latent_dim)
            mean = pooled.expand(self.latent_dim)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp(min=1e-6))
        self.ready.fill_(True)
        self._ready = True

    def forward(self, lat: Tensor) -> Tensor:
        """[N, z] raw latents -> [N, z] normalised latents."""
        if self.mode == "none":
            return lat
        if not self._ready:
            raise ClassifierConfigError(
                f"normalisation {self.mode!r} needs latent statistics: give the datamodule a `latent_stats` "
                "(mean [z], std [z]) attribute, call set_latent_stats(), or use normalisation='none'"
            )
        return (lat - self.mean) / self.std


class ARCModel(nn.Module):
    """Classify latent clouds: normalise, PTv3 (or any point backbone), global mean pool, linear/MLP head.

    num_classes: number of classes; latent_dim: z of the clouds.
    backbone: builds the backbone from z (default: the paper's PTv3), or its ``{"class_path", "init_args"}``
        description (:func:`backbone_spec`); the backbone takes a dict of
        ``coord`` [N, 3], ``feat`` [N, z], ``offset`` [B] and returns a point with ``feat`` and ``offset``.
    head_hidden: hidden widths of an MLP head (GELU); [] = the paper's single Linear.
    normalisation: see :class:`LatentNormaliser`.
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 32,
        backbone: Union[BackboneFactory, dict[str, Any], None] = None,
        head_hidden: Sequence[int] = (),
        normalisation: Normalisation = "per_dim",
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("latent_dim", latent_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ClassifierConfigError(f"{name} must be a positive int, got {value!r}")
        head_hidden = list(head_hidden)
        if not all(isinstance(h, int) and h > 0 for h in head_hidden):
            raise ClassifierConfigError(f"head_hidden must be a list of positive ints, got {head_hidden!r}")
        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.normaliser = LatentNormaliser(latent_dim, normalisation)
        build = backbone_factory(backbone)
        try:
            self.backbone = build(latent_dim)
        except (TypeError, ValueError, AssertionError) as err:
            raise ClassifierConfigError(f"backbone: invalid settings: {err}") from err
        widths = [int(self.backbone.out_channels), *head_hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        self.head = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))

    def check_batch(self, batch: CloudBatch, labels: bool = True) -> CloudBatch:
        """Raise :class:`~arc.cloud.CloudError` for a batch the model cannot take (``labels``: check them too)."""
        if not isinstance(batch, CloudBatch):
            raise CloudError(f"expected a CloudBatch, got {type(batch).__name__}")
        batch.validate()
        if len(batch) == 0:
            raise CloudError("empty batch (no clouds)")
        if batch.lat.shape[1] != self.latent_dim:
            raise CloudError(f"latents have {batch.lat.shape[1]} dims, the classifier expects {self.latent_dim}")
        label = batch.label
        if not labels:
            return batch
        if label.ndim == 1 and not label.dtype.is_floating_point and label.numel():
            low, high = int(label.min()), int(label.max())
            if low < 0 or high >= self.num_classes:
                raise CloudError(f"labels must be in [0, {self.num_classes}), got values in [{low}, {high}]")
        elif label.ndim == 2 and label.shape[1] != self.num_classes:
            raise CloudError(f"soft labels have {label.shape[1]} columns for {self.num_classes} classes")
        return batch

    def classify(self, pos: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        """[B, classes] logits from positions [N, D] (images: (row, col) [px]; D <= 3), normalised latents [N, z] and
        offsets [B]. PTv3 reads 3-D coordinates: pos padded with zero columns (a 2-D cloud at z = 0, a 1-D one on a line)."""
        if pos.ndim != 2 or not 1 <= pos.shape[1] <= 3:
            raise CloudError(f"positions must be [N, D] with D in 1..3, got {tuple(pos.shape)}")
        coord = torch.cat([pos.float(), pos.new_zeros(pos.shape[0], 3 - pos.shape[1], dtype=torch.float32)], dim=1)
        point = self.backbone(dict(coord=coord, feat=feat.float(), offset=offset))
        return self.head(mean_pool(point.feat, point.offset))

    def forward(self, batch: CloudBatch) -> Tensor:
        """[B, classes] logits of a batch of raw latents (normalised here, never augmented); labels unused."""
        self.check_batch(batch, labels=False)
        return self.classify(batch.pos, self.normaliser(batch.lat), batch.offset)

    def log_probs(self, batch: CloudBatch, views: int = 1, augment: Callable[..., CloudBatch] | None = None,
                  seed: int = 0, batch_idx: int = 0) -> Tensor:
        """[B, classes] log of the mean class probabilities over ``views`` views of a batch of raw latents
        (:func:`view_log_probs` with this model's normaliser and classifier)."""
        return view_log_probs(self.classify, self.normaliser, batch, views, augment, seed, batch_idx)


def view_log_probs(classify: Callable[[Tensor, Tensor, Tensor], Tensor], normalise: Callable[[Tensor], Tensor],
                   batch: CloudBatch, views: int = 1, augment: Callable[..., CloudBatch] | None = None, seed: int = 0,
                   batch_idx: int = 0) -> Tensor:
    """[B, classes] log of the mean class probabilities over ``views`` views of a batch of raw latents.

    ``classify(pos, normalised lat, offset)`` gives logits. One view is the log-softmax of the clean cloud's
    logits; each extra view ``v`` is the normalised batch passed through ``augment(batch,
    seed=derive_seed(seed, "eval-view", batch_idx, v))`` (test-time voting; it depends on the batch's
    composition through ``batch_idx``).
    """
    lat = normalise(batch.lat)
    log_probs = torch.log_softmax(classify(batch.pos, lat, batch.offset).float(), dim=1)
    if views == 1:
        return log_probs
    if augment is None:
        raise ClassifierConfigError("evaluation views > 1 need an augmentation (eval_augment)")
    probs = log_probs.exp()
    for view in range(1, views):
        shown = augment(replace(batch, lat=lat), seed=derive_seed(seed, "eval-view", batch_idx, view))
        probs = probs + torch.softmax(classify(shown.pos, shown.lat, shown.offset).float(), dim=1)
    return (probs / views).log()
