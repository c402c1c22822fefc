"""Cloud-space augmentations, batched on the device (no per-cloud Python loops).

Every augmentation takes a whole :class:`~arc.cloud.CloudBatch` and returns a
new one (inputs are never modified in place). Randomness comes from ``generator``
when one is passed, else from the global torch RNG; the composed pipeline takes a
``seed`` instead and gives every op its own generator derived from (seed, op name),
so switching one op on or off leaves the draws of the others unchanged.
Each op has a probability ``p``: drawn per cloud, except ARCMix (per batch).

Conventions (docs/architecture.md): positions are (row, col) in pixels, origin
top-left; the image centre is ((H-1)/2, (W-1)/2); ``dx`` = +col, ``dy`` = +row;
a positive angle turns counter-clockwise as the image is displayed (row axis
pointing down), so a point right of the centre moves up for +90 deg.

Pipeline order (fixed): push -> rotate -> flip -> shift -> mask ->
[latent normalisation, done by the caller] -> noise -> arcmix.

Config format for :func:`build_augmentations` (a dict, e.g. from YAML)::

    {"mask": 0.3, "arcmix": {"alpha": 1.0}}

Each key names an op; its value is ``None``/``False`` (off), ``True`` (on with
defaults), a number (shorthand for the op's main parameter, below) or a dict of
keyword arguments. Main parameters: noise=std, mask=fraction, push=magnitude,
rotate=degrees, flip=p, shift=pixels, arcmix=alpha.
"""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arc.cloud import CloudBatch
from arc.seeding import derive_generator

__all__ = [
    "AugmentConfigError",
    "CloudAugmentation",
    "Noise",
    "Mask",
    "Push",
    "Rotate",
    "Flip",
    "Shift",
    "ARCMix",
    "Augmentations",
    "build_augmentations",
    "random_subset",
    "soft_labels",
    "ORDER",
]


class AugmentConfigError(ValueError):
    """An augmentation name or parameter is invalid."""


# ---------------------------------------------------------------- random helpers


def _rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) float32 on ``device``, drawn from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randn(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _uniform(shape: tuple[int, ...], low: float, high: float, device: torch.device, generator) -> Tensor:
    return low + (high - low) * _rand(shape, device, generator)


def _active(batch: CloudBatch, p: float, generator: torch.Generator | None) -> Tensor:
    """[B] bool: which clouds an op with probability ``p`` applies to."""
    if p >= 1.0:
        return torch.ones(len(batch), dtype=torch.bool, device=batch.device)
    return _rand((len(batch),), batch.device, generator) < p


def random_subset(batch_ids: Tensor, starts: Tensor, n_keep: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[N] bool mask choosing ``n_keep[c]`` uniformly random points of every cloud ``c``.

    batch_ids: [N] int64 cloud number of each point (sorted, the flat layout);
    starts: [B] int64 first point of each cloud; n_keep: [B] int64 (clipped to
    the cloud size by construction of the ranks).
    """
    n = batch_ids.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=batch_ids.device)
    shuffled = torch.argsort(_rand((n,), batch_ids.device, generator))
    order = shuffled[torch.argsort(batch_ids[shuffled], stable=True)]  # random order within each cloud
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=batch_ids.device) - starts[batch_ids]
    return rank < n_keep[batch_ids]


def soft_labels(label: Tensor, num_classes: int) -> Tensor:
    """[B, classes] float probability targets from [B] int64 labels (or pass soft labels through)."""
    if label.ndim == 2:
        if label.shape[1] != num_classes:
            raise AugmentConfigError(f"soft labels have {label.shape[1]} columns for {num_classes} classes")
        return label.float()
    return F.one_hot(label.long(), num_classes).float()


def _points_where(batch: CloudBatch, keep: Tensor) -> CloudBatch:
    """The batch restricted to points where ``keep`` [N] is true (cloud order kept)."""
    b = len(batch)
    kept = torch.zeros(b, dtype=torch.long, device=batch.device).index_add_(0, batch.batch_ids(), keep.long())
    return replace(batch, pos=batch.pos[keep], lat=batch.lat[keep], offset=torch.cumsum(kept, 0))


# ---------------------------------------------------------------- ops


def _check_prob(name: str, p: float) -> float:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
        raise AugmentConfigError(f"{name}: p must be a number in [0, 1], got {p!r}")
    return float(p)


def _check_nonneg(name: str, key: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise AugmentConfigError(f"{name}: {key} must be a finite number >= 0, got {value!r}")
    return float(value)


class CloudAugmentation(ABC):
    """Base class: ``op(batch, generator=None) -> CloudBatch``; applied to each cloud with probability ``p``."""

    name = "augmentation"

    def __init__(self, p: float = 1.0) -> None:
        self.p = _check_prob(self.name, p)

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None) -> CloudBatch:
        if self.p == 0.0 or len(batch) == 0:
            return batch
        return self.apply(batch, _active(batch, self.p, generator), generator)

    @abstractmethod
    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        """Transform the clouds where ``active`` [B] is true."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return f"{type(self).__name__}(p={self.p}{', ' + extra if extra else ''})"


class Noise(CloudAugmentation):
    """lat += N(0, std^2), i.i.d. per entry (meant for normalised latents)."""

    name = "noise"

    def __init__(self, std: float = 0.001, p: float = 1.0) -> None:
        super().__init__(p)
        self.std = _check_nonneg(self.name, "std", std)

    def apply(self, batch, active, generator):
        scale = self.std * active[batch.batch_ids()].to(batch.lat.dtype).unsqueeze(1)
        return replace(batch, lat=batch.lat + scale * _randn(tuple(batch.lat.shape), batch.device, generator))

    def extra_repr(self) -> str:
        return f"std={self.std}"


class Mask(CloudAugmentation):
    """Keep a random subset of int((1 - fraction) * k) points per cloud (at least 1)."""

    name = "mask"

    def __init__(self, fraction: float = 0.3, p: float = 1.0) -> None:
        super().__init__(p)
        fraction = _check_nonneg(self.name, "fraction", fraction)
        if fraction >= 1.0:
            raise AugmentConfigError(f"mask: fraction must be in [0, 1), got {fraction!r}")
        self.fraction = fraction

    def apply(self, batch, active, generator):
        counts = batch.counts()
        keep_n = torch.floor((1.0 - self.fraction) * counts.double()).long()
        keep_n = torch.where(counts > 0, keep_n.clamp(min=1), counts)
        keep_n = torch.where(active, keep_n, counts)
        return _points_where(batch, random_subset(batch.batch_ids(), batch.starts(), keep_n, generator))

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"


class Push(CloudAugmentation):
    """Per point, independent U(-magnitude, magnitude) pixel offsets on (row, col)."""

    name = "push"

    def __init__(self, magnitude: float = 2.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.magnitude = _check_nonneg(self.name, "magnitude", magnitude)

    def apply(self, batch, active, generator):
        m = self.magnitude
        jitter = _uniform(tuple(batch.pos.shape), -m, m, batch.device, generator)
        jitter = jitter * active[batch.batch_ids()].to(jitter.dtype).unsqueeze(1)
        return replace(batch, pos=batch.pos + jitter.to(batch.pos.dtype))

    def extra_repr(self) -> str:
        return f"magnitude={self.magnitude}"


def _pivot(batch: CloudBatch, about: str) -> Tensor:
    """[B, 2] float (row, col) pivot: image centre ((H-1)/2, (W-1)/2) or the origin."""
    if about == "centre":
        return (batch.size.to(batch.pos.dtype) - 1.0) / 2.0
    return torch.zeros(len(batch), 2, dtype=batch.pos.dtype, device=batch.device)


def _check_about(name: str, about: str) -> str:
    if about not in ("centre", "origin"):
        raise AugmentConfigError(f"{name}: about must be 'centre' or 'origin', got {about!r}")
    return about


class Rotate(CloudAugmentation):
    """Rotate each cloud by theta ~ U(-degrees, degrees) about the image centre (or the origin).

    Positive theta is counter-clockwise as displayed (row axis down):
    drow' = drow cos(theta) - dcol sin(theta), dcol' = dcol cos(theta) + drow sin(theta).
    ``fixed=True`` turns every cloud by exactly ``degrees`` (edits, tests).
    """

    name = "rotate"

    def __init__(self, degrees: float = 180.0, about: str = "centre", fixed: bool = False, p: float = 1.0) -> None:
        super().__init__(p)
        if fixed:
            if not isinstance(degrees, (int, float)) or isinstance(degrees, bool) or not math.isfinite(degrees):
                raise AugmentConfigError(f"rotate: degrees must be a finite number, got {degrees!r}")
            self.degrees = float(degrees)
        else:
            self.degrees = _check_nonneg(self.name, "degrees", degrees)
        self.about = _check_about(self.name, about)
        self.fixed = bool(fixed)

    def apply(self, batch, active, generator):
        b = len(batch)
        if self.fixed:
            theta = torch.full((b,), self.degrees, device=batch.device)
        else:
            theta = _uniform((b,), -self.degrees, self.degrees, batch.device, generator)
        theta = torch.deg2rad(theta * active.to(theta.dtype)).to(batch.pos.dtype)
        ids = batch.batch_ids()
        cos, sin = torch.cos(theta)[ids], torch.sin(theta)[ids]
        pivot = _pivot(batch, self.about)[ids]
        d = batch.pos - pivot
        rotated = torch.stack((d[:, 0] * cos - d[:, 1] * sin, d[:, 1] * cos + d[:, 0] * sin), dim=1)
        return replace(batch, pos=pivot + rotated)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, about={self.about!r}, fixed={self.fixed}"


class Flip(CloudAugmentation):
    """Mirror each axis independently with probability ``p``.

    horizontal: col -> (W-1) - col (about the centre) or -col (about the origin);
    vertical: the same for rows.
    """

    name = "flip"

    def __init__(self, p: float = 0.5, horizontal: bool = True, vertical: bool = True, about: str = "centre") -> None:
        super().__init__(p)
        self.horizontal, self.vertical = bool(horizontal), bool(vertical)
        self.about = _check_about(self.name, about)

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None) -> CloudBatch:
        if self.p == 0.0 or len(batch) == 0:
            return batch
        draws = _rand((len(batch), 2), batch.device, generator) < self.p  # (vertical, horizontal) per cloud
        axes = torch.tensor([self.vertical, self.horizontal], device=batch.device)
        return self.apply(batch, draws & axes, generator)

    def apply(self, batch, active, generator):
        ids = batch.batch_ids()
        pivot = _pivot(batch, self.about)[ids]
        sign = (1.0 - 2.0 * active.to(batch.pos.dtype))[ids]  # -1 where flipped
        return replace(batch, pos=pivot + sign * (batch.pos - pivot))

    def extra_repr(self) -> str:
        return f"horizontal={self.horizontal}, vertical={self.vertical}, about={self.about!r}"


class Shift(CloudAugmentation):
    """Translate each whole cloud by (dy, dx) ~ U(-pixels, pixels)^2 (dy = +row, dx = +col)."""

    name = "shift"

    def __init__(self, pixels: float = 4.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.pixels = _check_nonneg(self.name, "pixels", pixels)

    def apply(self, batch, active, generator):
        s = self.pixels
        delta = _uniform((len(batch), 2), -s, s, batch.device, generator) * active.unsqueeze(1)
        return replace(batch, pos=batch.pos + delta.to(batch.pos.dtype)[batch.batch_ids()])

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"


class ARCMix:
    """Mix every cloud i with a partner j; one lambda ~ Beta(alpha, alpha) per batch, applied with probability ``p``.

    variant "subset": floor(lambda k_i) random points of i and floor((1-lambda) k_j) random points of j.
    variant "box": a box covering (1-lambda) of cloud i's image area (inside the image, random place):
    points of i outside the box and points of j inside it (j's positions read in the same pixel frame).
    Partners come from the original batch: ``partner="roll"`` (j = i+1 mod B) or ``"permute"`` (random).
    Targets become soft [B, classes]: each cloud's weight is its actual share of points.
    A pair whose mix would be empty keeps cloud i unchanged (weight 1).
    """

    name = "arcmix"
    variants = ("subset", "box")
    partners = ("roll", "permute")

    def __init__(self, num_classes: int, alpha: float = 1.0, variant: str = "subset", partner: str = "roll", p: float = 1.0) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise AugmentConfigError(f"arcmix: num_classes must be a positive int, got {num_classes!r}")
        alpha = _check_nonneg(self.name, "alpha", alpha)
        if alpha <= 0:
            raise AugmentConfigError(f"arcmix: alpha must be > 0, got {alpha!r}")
        if variant not in self.variants:
            raise AugmentConfigError(f"arcmix: variant must be one of {list(self.variants)}, got {variant!r}")
        if partner not in self.partners:
            raise AugmentConfigError(f"arcmix: partner must be one of {list(self.partners)}, got {partner!r}")
        self.num_classes, self.alpha, self.variant, self.partner = num_classes, alpha, variant, partner
        self.p = _check_prob(self.name, p)

    def __repr__(self) -> str:
        return f"ARCMix(p={self.p}, alpha={self.alpha}, variant={self.variant!r}, partner={self.partner!r})"

    def sample_lambda(self, generator: torch.Generator | None = None) -> float:
        """One lambda ~ Beta(alpha, alpha), reproducible from ``generator`` (or the global torch RNG)."""
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        return float(np.random.default_rng(seed).beta(self.alpha, self.alpha))

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None, lam: float | None = None) -> CloudBatch:
        b = len(batch)
        if b == 0 or self.p == 0.0:
            return batch
        if self.p < 1.0 and float(_rand((1,), torch.device("cpu"), generator)) >= self.p:
            return batch
        lam = self.sample_lambda(generator) if lam is None else float(lam)
        device = batch.device
        if self.partner == "roll":
            partner = torch.roll(torch.arange(b, device=device), -1)
        elif generator is None:
            partner = torch.randperm(b, device=device)
        else:
            partner = torch.randperm(b, generator=generator, device=generator.device).to(device)
        inverse = torch.empty_like(partner)
        inverse[partner] = torch.arange(b, device=device)

        ids, counts = batch.batch_ids(), batch.counts()
        if self.variant == "subset":
            n_own = torch.floor(lam * counts.double()).long()
            n_other = torch.floor((1.0 - lam) * counts[partner].double()).long()
            own = random_subset(ids, batch.starts(), n_own, generator)
            other = random_subset(ids, batch.starts(), n_other[inverse], generator)  # indexed by source cloud
        else:
            lo, extent = self._boxes(batch, lam, generator)
            inside_own = self._inside(batch.pos, lo[ids], extent[ids])
            inside_other = self._inside(batch.pos, lo[inverse][ids], extent[inverse][ids])
            own, other = ~inside_own, inside_other

        zeros = torch.zeros(b, dtype=torch.long, device=device)
        n_own = zeros.index_add(0, ids, own.long())
        n_other = zeros.index_add(0, inverse[ids], other.long())  # per destination cloud
        empty = (n_own + n_other) == 0
        if bool(empty.any()):  # such pairs keep cloud i unchanged
            own = own | empty[ids]
            other = other & ~empty[inverse[ids]]
            n_own = zeros.index_add(0, ids, own.long())
            n_other = zeros.index_add(0, inverse[ids], other.long())

        own_idx, other_idx = torch.nonzero(own).flatten(), torch.nonzero(other).flatten()
        dest = torch.cat([ids[own_idx], inverse[ids[other_idx]]])
        part = torch.cat([torch.zeros_like(own_idx), torch.ones_like(other_idx)])
        points = torch.cat([own_idx, other_idx])[torch.argsort(dest * 2 + part, stable=True)]

        total = n_own + n_other
        w_own = (n_own.double() / total.clamp(min=1).double()).float().unsqueeze(1)
        targets = soft_labels(batch.label, self.num_classes)
        label = w_own * targets + (1.0 - w_own) * targets[partner]
        return replace(batch, pos=batch.pos[points], lat=batch.lat[points], offset=torch.cumsum(total, 0), label=label)

    @staticmethod
    def _inside(pos: Tensor, lo: Tensor, extent: Tensor) -> Tensor:
        return ((pos >= lo) & (pos < lo + extent)).all(dim=1)

    def _boxes(self, batch: CloudBatch, lam: float, generator) -> tuple[Tensor, Tensor]:
        """[B, 2] low corner and [B, 2] extent of each cloud's box; the image spans [-0.5, H-0.5) x [-0.5, W-0.5)."""
        size = batch.size.to(torch.float32)
        extent = size * math.sqrt(max(0.0, 1.0 - lam))
        lo = -0.5 + (size - extent) * _rand((len(batch), 2), batch.device, generator)
        return lo.to(batch.pos.dtype), extent.to(batch.pos.dtype)


# ---------------------------------------------------------------- pipeline

ORDER = ("push", "rotate", "flip", "shift", "mask", "noise", "arcmix")
_POINT_SPACE = ("push", "rotate", "flip", "shift", "mask")
_OPS: dict[str, tuple[type, str]] = {
    "noise": (Noise, "std"),
    "mask": (Mask, "fraction"),
    "push": (Push, "magnitude"),
    "rotate": (Rotate, "degrees"),
    "flip": (Flip, "p"),
    "shift": (Shift, "pixels"),
    "arcmix": (ARCMix, "alpha"),
}


class Augmentations:
    """A composed pipeline in the fixed order push, rotate, flip, shift, mask, [normalise], noise, arcmix."""

    def __init__(self, ops: dict[str, Callable]) -> None:
        unknown = set(ops) - set(ORDER)
        if unknown:
            raise AugmentConfigError(f"unknown augmentation(s) {sorted(unknown)}; valid: {list(ORDER)}")
        self.ops = {name: ops[name] for name in ORDER if name in ops}

    def __len__(self) -> int:
        return len(self.ops)

    def __contains__(self, name: str) -> bool:
        return name in self.ops

    def __repr__(self) -> str:
        return "Augmentations(" + ", ".join(repr(op) for op in self.ops.values()) + ")"

    def __call__(
        self,
        batch: CloudBatch,
        normalise: Callable[[Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> CloudBatch:
        """Apply every op; ``normalise`` ([N, z] -> [N, z]) runs on the latents after mask, before noise.

        ``seed``: each op draws from ``derive_generator(seed, op name)`` on the batch's device;
        ``generator``: every op draws from this one generator; neither: the global RNG.
        """
        if seed is not None and generator is not None:
            raise AugmentConfigError("pass either a seed or a generator, not both")

        def draws(name: str) -> torch.Generator | None:
            return generator if seed is None else derive_generator(seed, name, device=batch.device)

        for name, op in self.ops.items():
            if name in _POINT_SPACE:
                batch = op(batch, draws(name))
        if normalise is not None:
            batch = replace(batch, lat=normalise(batch.lat))
        for name, op in self.ops.items():
            if name not in _POINT_SPACE:
                batch = op(batch, draws(name))
        return batch


def build_augmentations(config: dict[str, Any] | None, num_classes: int | None = None) -> Augmentations:
    """Build the pipeline from a config dict (format in the module docstring).

    ``num_classes`` is required when ARCMix is on (it makes soft targets).
    Raises :class:`AugmentConfigError` naming the valid choices for an unknown name or parameter.
    """
    if config is None:
        return Augmentations({})
    if not isinstance(config, dict):
        raise AugmentConfigError(f"augmentation config must be a dict of name -> settings, got {type(config).__name__}")
    ops: dict[str, Callable] = {}
    for name, value in config.items():
        if name not in _OPS:
            raise AugmentConfigError(f"unknown augmentation {name!r}; valid: {list(ORDER)}")
        cls, main = _OPS[name]
        if value is None or value is False:
            continue
        if value is True:
            kwargs: dict[str, Any] = {}
        elif isinstance(value, (int, float)):
            kwargs = {main: value}
        elif isinstance(value, dict):
            kwargs = dict(value)
        else:
            raise AugmentConfigError(
                f"{name}: settings must be None/false, true, a number ({main}) or a dict, got {value!r}"
            )
        if cls is ARCMix:
            if num_classes is None:
                raise AugmentConfigError("arcmix needs num_classes (pass it to build_augmentations)")
            kwargs.setdefault("num_classes", num_classes)
        valid = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
        bad = sorted(set(kwargs) - set(valid))
        if bad:
            raise AugmentConfigError(f"{name}: unknown parameter(s) {bad}; valid: {valid}")
        ops[name] = cls(**kwargs)
    return Augmentations(ops)
