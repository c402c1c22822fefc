"""The contract every augmentation keeps, one battery over the registry below (timm's tests/test_models.py style).

Each member is added by one line: its name, an instance at a working strength, and instances at zero
strength (probability 0, magnitude 0). Every member must return a valid batch of the same clouds,
leave its input untouched, draw only from the generator it is given, and be the identity at zero strength.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Callable

import pytest
import torch

from arc.augment import ARCMix, Augmentations, Flip, Mask, Noise, Push, Rotate, Shift, build_augmentations
from arc.cloud import CloudBatch
from test_augment import gen, make_batch

FULL = {"push": 2, "rotate": 180, "flip": True, "shift": 3, "mask": 0.3, "noise": 0.01, "arcmix": {"alpha": 1.0}}
OFF = {"push": 0, "rotate": 0, "flip": {"p": 0}, "shift": 0, "mask": 0, "noise": 0, "arcmix": {"alpha": 1.0, "p": 0}}

# name -> (the op at a working strength, the op at each zero strength)
AUGMENTATIONS: dict[str, tuple[Callable, list[Callable]]] = {
    "noise": (lambda: Noise(std=0.1), [lambda: Noise(std=0.1, p=0), lambda: Noise(std=0.0)]),
    "mask": (lambda: Mask(0.5), [lambda: Mask(0.5, p=0), lambda: Mask(0.0)]),
    "push": (lambda: Push(2.0), [lambda: Push(p=0), lambda: Push(0.0)]),
    "rotate": (lambda: Rotate(180.0), [lambda: Rotate(p=0), lambda: Rotate(0.0), lambda: Rotate(0.0, fixed=True)]),
    "flip": (lambda: Flip(p=0.5), [lambda: Flip(p=0), lambda: Flip(p=1.0, horizontal=False, vertical=False)]),
    "shift": (lambda: Shift(3.0), [lambda: Shift(p=0), lambda: Shift(0.0)]),
    "arcmix": (lambda: ARCMix(10, variant="subset"), [lambda: ARCMix(10, p=0)]),
    "arcmix_box": (lambda: ARCMix(10, variant="box", partner="permute"), [lambda: ARCMix(10, variant="box", p=0)]),
    "augmentations": (lambda: build_augmentations(FULL, num_classes=10),
                      [lambda: build_augmentations({}), lambda: build_augmentations(OFF, num_classes=10)]),
}
NAMES = list(AUGMENTATIONS)
ZEROS = [(name, i) for name in NAMES for i in range(len(AUGMENTATIONS[name][1]))]


def _batch() -> CloudBatch:
    """Clouds of very different sizes (one of a single point), integer positions."""
    return make_batch([1, 2, 40, 7, 300, 3], seed=4)


def _copy(batch: CloudBatch) -> dict[str, torch.Tensor]:
    return {f.name: getattr(batch, f.name).clone() for f in fields(batch)}


def _assert_same(a: CloudBatch, b: CloudBatch) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and torch.equal(x, y), f.name


@pytest.mark.parametrize("name", NAMES)
def test_returns_a_valid_batch_of_the_same_clouds(name):
    batch = _batch()
    out = AUGMENTATIONS[name][0]()(batch, generator=gen(1)).validate()
    assert len(out) == len(batch)
    assert out.pos.dtype == batch.pos.dtype and out.lat.dtype == batch.lat.dtype
    for field in ("size", "index", "colour_mean", "colour_std"):  # per-cloud fields other than the label are kept
        assert torch.equal(getattr(out, field), getattr(batch, field)), field


@pytest.mark.parametrize("name", NAMES)
def test_leaves_the_input_batch_untouched(name):
    batch = _batch()
    before = _copy(batch)
    AUGMENTATIONS[name][0]()(batch, generator=gen(2))
    for field, value in before.items():
        assert torch.equal(getattr(batch, field), value), field


@pytest.mark.parametrize("name", NAMES)
def test_is_reproducible_from_the_generator_alone(name):
    batch, op = _batch(), AUGMENTATIONS[name][0]()
    torch.manual_seed(0)
    first = op(batch, generator=gen(3))
    torch.manual_seed(1)  # the global RNG is not read when a generator is given
    _assert_same(first, op(batch, generator=gen(3)))


@pytest.mark.parametrize("name, which", ZEROS)
def test_is_the_identity_at_zero_strength(name, which):
    batch = _batch()
    out = AUGMENTATIONS[name][1][which]()(batch, generator=gen(10))
    _assert_same(out, batch)


def test_p_zero_is_identity_for_every_op():
    batch = make_batch([3, 40, 7])
    ops = [Noise(p=0), Mask(0.5, p=0), Push(p=0), Rotate(p=0), Flip(p=0), Shift(p=0), ARCMix(10, p=0)]
    for op in ops:
        out = op(batch, gen(10))
        for name in ("pos", "lat", "offset", "label"):
            assert torch.equal(getattr(out, name), getattr(batch, name)), (op, name)
    out = build_augmentations({}, num_classes=10)(batch, generator=gen(10))
    assert torch.equal(out.pos, batch.pos) and torch.equal(out.lat, batch.lat)


def test_the_pipeline_is_reproducible_from_a_seed():
    batch, aug = _batch(), build_augmentations(FULL, num_classes=10)
    assert isinstance(aug, Augmentations)
    _assert_same(aug(batch, seed=7), aug(batch, seed=7))


@pytest.mark.parametrize("variant", ["subset", "box"])
def test_arcmix_at_lambda_one_keeps_every_cloud_with_a_one_hot_target(variant):
    batch = _batch()
    out = ARCMix(10, variant=variant)(batch, gen(5), lam=1.0)
    assert torch.equal(out.pos, batch.pos) and torch.equal(out.lat, batch.lat) and torch.equal(out.offset, batch.offset)
    assert torch.equal(out.label, torch.nn.functional.one_hot(batch.label, 10).float())
