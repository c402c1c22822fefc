"""An MLP on flattened INR weight vectors (the SIREN-weights + MLP baseline of the BRATS paper).

:func:`weight_mlp` is the network (plain ``nn.Module``, no Lightning): ``[P, *hidden, classes]``
linear layers with ReLU, layer norm and dropout between them, reading the standardised weight
vectors of :class:`arc.baseline_training.weights_data.WeightDataModule`. :class:`WeightMLPClassifier` is
the training recipe only (on :class:`WeightClassifier`, the evaluation every weight-vector
classifier shares): cross-entropy, AdamW, the metrics and log keys of
:class:`arc.classifier.ARCClassifier` (``train/loss``, ``val/loss``, ``val/acc``, ``val/acc_macro``,
``test/loss``, ``test/acc``, ``test/acc_macro``).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from arc.seeding import derive_seed, run_seed


def weight_mlp(in_dim: int, num_classes: int, hidden: Sequence[int] = (512, 512), dropout: float = 0.2) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU -> Dropout per hidden width, then a linear head: [N, in_dim] -> logits [N, classes]."""
    if in_dim < 1 or num_classes < 2 or any(w < 1 for w in hidden) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"weight_mlp needs in_dim >= 1, num_classes >= 2, positive hidden widths and dropout in [0, 1); "
                         f"got {in_dim}, {num_classes}, {list(hidden)}, {dropout}")
    layers: list[nn.Module] = []
    width = in_dim
    for out in hidden:
        layers += [nn.Linear(width, out), nn.LayerNorm(out), nn.ReLU(), nn.Dropout(dropout)]
        width = out
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class WeightClassifier(pl.LightningModule):
    """What the baseline classifiers share: ``forward(inputs [N, ...]) -> logits [N, C]`` (subclasses),
    the cross-entropy training step (``train/loss``), micro and macro accuracy, logged as ``<stage>/loss``,
    ``<stage>/acc``, ``<stage>/acc_macro`` for val and test; :meth:`adamw_cosine` for the recipes that decay."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_macro = MulticlassAccuracy(num_classes, average="macro")

    @staticmethod
    def initialised(seed: Optional[int], build: Callable[[], nn.Module]) -> nn.Module:
        """``build()`` with its weights drawn from the run's initialisation seed ("init"; the global RNG is
        left untouched), so a model's starting point depends on its seed only."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(run_seed(seed), "init"))
            return build()

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        weights, labels = batch
        logits = self(weights)
        loss = F.cross_entropy(logits, labels)
        acc, acc_macro = (self.val_acc, self.val_acc_macro) if stage == "val" else (self.test_acc, self.test_acc_macro)
        acc(logits, labels)
        acc_macro(logits, labels)
        n = len(labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log(f"{stage}/acc_macro", acc_macro, on_epoch=True, batch_size=n)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        loss = F.cross_entropy(self(inputs), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def adamw_cosine(self) -> dict:
        """AdamW (``hparams.lr``, ``hparams.weight_decay``) with a cosine decay over ``trainer.max_epochs``."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)}


class WeightMLPClassifier(WeightClassifier):
    """Train :func:`weight_mlp` on (weight vector, label) batches.

    num_classes, latent_dim (P, the weight vector's length), class_names: linked from the DataModule by the CLI.
    hidden, dropout: the network. lr, weight_decay: AdamW. seed: initialisation seed (default: the training seed).
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int,
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        class_names: Optional[list[str]] = None,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        self.net = self.initialised(seed, lambda: weight_mlp(latent_dim, num_classes, tuple(hidden), dropout))

    def forward(self, weights: Tensor) -> Tensor:
        return self.net(weights)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
