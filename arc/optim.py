"""The classifier's optimiser and learning-rate schedules (no Lightning): AdamW with an optional
lower rate for the transformer blocks, and constant, cosine, warm-up cosine or OneCycle schedules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import nn

from arc.model import ClassifierConfigError

__all__ = ["OptimizerConfig", "SCHEDULERS", "Scheduler", "build_schedule", "parameter_groups"]

Scheduler = Literal["cosine", "warmup_cosine", "onecycle"]
SCHEDULERS = (None, "cosine", "warmup_cosine", "onecycle")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW settings (``torch.optim.AdamW``): learning rate, decoupled weight decay, betas, eps."""

    lr: float = 1e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ClassifierConfigError(f"optimizer: lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or self.eps <= 0:
            raise ClassifierConfigError("optimizer: weight_decay must be >= 0 and eps > 0")
        object.__setattr__(self, "betas", tuple(self.betas))


def parameter_groups(module: nn.Module, lr: float, block_lr_scale: float, blocks: str) -> list[dict[str, Any]]:
    """Two AdamW groups: parameters named ``blocks``* at ``block_lr_scale`` x lr, every other one at lr."""
    inside = [p for n, p in module.named_parameters() if n.startswith(blocks)]
    ids = {id(p) for p in inside}
    rest = [p for p in module.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, {"params": inside, "lr": lr * block_lr_scale}]


def build_schedule(optimizer: torch.optim.Optimizer, name: Optional[Scheduler], total_steps: int,
                   max_epochs: Optional[int], warmup_epochs: int = 0) -> Optional[dict[str, Any]]:
    """Lightning's ``lr_scheduler`` entry for ``name`` (None: a constant rate, the paper's).

    "onecycle": per step, torch's OneCycleLR over ``total_steps``, peak at 5 %, cosine down to 1e-4 of
    the peak (Pointcept's PTv3 classification schedule); "cosine" / "warmup_cosine": per epoch over
    ``max_epochs``, the latter after ``warmup_epochs`` linear warm-up epochs.
    """
    if name is None:
        return None
    if name == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=int(total_steps),
            pct_start=0.05, div_factor=10.0, final_div_factor=1000.0)
        return {"scheduler": schedule, "interval": "step"}
    if max_epochs is None or max_epochs < 1:
        raise ClassifierConfigError(f"scheduler {name!r} needs trainer.max_epochs >= 1, got {max_epochs!r}")
    warmup = warmup_epochs if name == "warmup_cosine" else 0
    if warmup >= max_epochs:
        raise ClassifierConfigError(f"warmup_epochs ({warmup}) must be < max_epochs ({max_epochs})")
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs - warmup)
    if not warmup:
        return {"scheduler": cosine, "interval": "epoch"}
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return {"scheduler": torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]),
            "interval": "epoch"}
