"""The 2-D augmentations and edits give the same clouds, bit for bit, as before they became D-generic.

The digests were recorded from the 2-D-only code (commit d87acfe) on CPU float32, with the batch,
seeds and edits below; a change to any of them is a change of the 2-D results.
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from arc.augment import ARCMix, Flip, Rotate, Shift, build_augmentations
from arc.cloud import CloudBatch
from arc.edits import apply_edits, parse_edit

PIPELINE = {"push": 2, "rotate": 180, "flip": True, "shift": 3, "mask": 0.3, "noise": 0.01, "arcmix": {"alpha": 1.0}}
EDITS = ["translate:dx=3,dy=-2", "rotate:deg=33", "flip:axis=h", "scale:factor=1.5,row=2,col=3", "push:px=2,seed=1",
         "mask:box=0,0,5,6", "mask:circle=9,9,3", "mix:index=1,mode=box,box=2,2,12,10", "mix:index=1,mode=left-right",
         "rotate:deg=-30,exact", "flip:axis=v,exact", "noise:std=0.5,seed=2"]


def _batch() -> CloudBatch:
    """Six 2-D clouds of 1 to 300 random integer positions in 16 x 20 images; lat random."""
    g = torch.Generator().manual_seed(11)
    counts = torch.tensor([1, 2, 40, 7, 300, 3])
    n, b = int(counts.sum()), counts.numel()
    pos = torch.stack([torch.randint(0, 16, (n,), generator=g), torch.randint(0, 20, (n,), generator=g)], 1).float()
    return CloudBatch(pos=pos, lat=torch.randn(n, 4, generator=g), offset=torch.cumsum(counts, 0),
                      label=torch.arange(b) % 10, size=torch.tensor([[16, 20]] * b), index=torch.arange(b),
                      colour_mean=torch.zeros(b, 1), colour_std=torch.ones(b, 1))


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _cloud_digest(batch: CloudBatch) -> str:
    return _digest(batch.pos, batch.lat, batch.offset, batch.label)


def _augmented() -> dict[str, str]:
    batch = _batch()
    ops = {
        "pipeline": lambda: build_augmentations(PIPELINE, num_classes=10)(batch, seed=7),
        "pipeline_box": lambda: build_augmentations({**PIPELINE, "arcmix": {"variant": "box", "partner": "permute"}},
                                                    num_classes=10)(batch, seed=8),
        "rotate_fixed": lambda: Rotate(33.0, fixed=True)(batch),
        "rotate_origin": lambda: Rotate(90.0, about="origin", p=0.5)(batch, torch.Generator().manual_seed(3)),
        "flip_origin": lambda: Flip(p=0.5, about="origin")(batch, torch.Generator().manual_seed(4)),
        "shift": lambda: Shift(2.5, p=0.7)(batch, torch.Generator().manual_seed(5)),
        "arcmix_box": lambda: ARCMix(10, variant="box")(batch, torch.Generator().manual_seed(6), lam=0.4),
    }
    return {name: _cloud_digest(op()) for name, op in ops.items()}


def _edited() -> str:
    batch = _batch()
    states = apply_edits(batch.cloud(4), [parse_edit(e) for e in EDITS], 4, lookup=lambda i, split: batch.cloud(2))
    return _digest(*[t for s in states for t in (s.cloud.pos, s.cloud.lat, s.query_map.matrix, s.query_map.shift)])


RECORDED = {"pipeline": "5dba8aed8b47774f", "pipeline_box": "bdd6da65b572f3a9", "rotate_fixed": "e94818e01f4932a1",
            "rotate_origin": "e5b1625bfaa6b884", "flip_origin": "681aeeef1f693ea8", "shift": "7fc74bd51e98ae67",
            "arcmix_box": "4dc8a4f7153b17ec"}
RECORDED_EDITS = "4b0ec709b3c0712e"


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_2d_augmentations_are_unchanged(name):
    assert _augmented()[name] == RECORDED[name]


def test_2d_edits_are_unchanged():
    assert _edited() == RECORDED_EDITS
