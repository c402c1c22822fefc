"""The composed pipeline in its fixed order, and its builder from a config dict.

Pipeline order (fixed): push -> rotate -> flip -> shift -> mask -> [latent normalisation, done by
the caller] -> noise -> arcmix. With a ``seed``, every op draws from its own generator derived
from (seed, op name), so switching one op on or off leaves the draws of the others unchanged.

Config format for :func:`build_augmentations` (a dict, e.g. from YAML)::

    {"mask": 0.3, "arcmix": {"alpha": 1.0}}

Each key names an op; its value is ``None``/``False`` (off), ``True`` (on with defaults), a number
(shorthand for the op's main parameter, below) or a dict of keyword arguments. Main parameters:
noise=std, mask=fraction, push=magnitude, rotate=degrees, flip=p, shift=pixels, arcmix=alpha.
"""
from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import Tensor

from arc.augment.base import AugmentConfigError
from arc.augment.mix import ARCMix
from arc.augment.points import Flip, Mask, Noise, Push, Rotate, Shift
from arc.cloud import CloudBatch
from arc.seeding import derive_generator

__all__ = ["ORDER", "Augmentations", "build_augmentations"]

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
