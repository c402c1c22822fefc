"""The ARC classifier: PTv3 on latent clouds, global mean pooling, a linear (or MLP) head.

Batches are :class:`~arc.cloud.CloudBatch` with raw latents. The module
normalises them with the train-only statistics it receives from the DataModule
(``datamodule.latent_stats``) or :meth:`ARCClassifier.set_latent_stats`, and
keeps them as buffers, so a checkpoint predicts with the same statistics.
Augmentations (:mod:`arc.augment`) run in ``training_step`` only, on the device.

Logged: ``train/loss``, ``val/loss``, ``val/acc`` (top-1 micro), ``val/acc_macro``,
``test/loss``, ``test/acc``, ``test/acc_macro``, ``test/acc_class/<name>``.
"""
from __future__ import annotations

import csv
import inspect
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from arc.augment import build_augmentations, soft_labels
from arc.cloud import CloudBatch, CloudError
from arc.seeding import derive_seed, run_seed
from arc.viz import cloud_scatter, confusion_image

__all__ = ["ARCClassifier", "ClassifierConfigError", "PredictionWriter", "ARC_BACKBONE", "DEFAULT_AUGMENT"]

ARC_BACKBONE: dict[str, Any] = dict(
    enc_depths=(1, 1, 2, 1),
    enc_channels=(64, 64, 64, 64),
    enc_num_head=(8, 16, 32, 32),
    enc_patch_size=(25, 25, 25, 25),
    stride=(2, 2, 2),
    grid_size=2.0,
    mlp_ratio=2,
    drop_path=0.3,
    enable_rpe=True,
    enable_cpe=True,
    order=("z", "z-trans", "hilbert", "hilbert-trans"),
    shuffle_orders=True,
)
"""The paper's PTv3 settings (thesis App. B and the authors' published config); ``backbone`` overrides any of them.

BatchNorm momentum stays at the backbone's default (torch's 0.1): the upstream 0.01 leaves the
running statistics unconverged for the first few hundred steps, so short runs evaluate at chance
level; set ``bn_momentum: 0.01`` in ``backbone`` for the upstream value."""

DEFAULT_AUGMENT: dict[str, Any] = {"mask": 0.3, "arcmix": {"alpha": 1.0}}
"""The paper's best recipe: masking 0.3 + ARCMix alpha 1 (thesis Table 5)."""

NORMALISATIONS = ("per_dim", "whole", "none")
SCHEDULERS = (None, "cosine", "warmup_cosine", "onecycle")


class ClassifierConfigError(ValueError):
    """An invalid classifier setting."""


def _backbone_class() -> type:
    from ptv3 import PointTransformerV3

    return PointTransformerV3


def _mean_pool(feat: Tensor, offset: Tensor) -> Tensor:
    """[B, C] mean of ``feat`` [M, C] over each cloud of the ragged layout ``offset`` [B]."""
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    ids = torch.repeat_interleave(torch.arange(offset.numel(), device=feat.device), counts, output_size=feat.shape[0])
    total = feat.new_zeros(offset.numel(), feat.shape[1]).index_add_(0, ids, feat)
    return total / counts.clamp(min=1).unsqueeze(1).to(feat.dtype)


class ARCClassifier(pl.LightningModule):
    """Classify latent clouds with PTv3 (thesis §3.3 and App. B; docs/architecture.md).

    num_classes: number of classes; latent_dim: z of the clouds.
    backbone: PTv3 keyword arguments overriding :data:`ARC_BACKBONE` (in_channels is latent_dim).
    head_hidden: hidden widths of an MLP head (GELU); [] = the paper's single Linear.
    augment: :func:`arc.augment.build_augmentations` config (None = no augmentation).
    normalisation: "per_dim" (z-vector stats), "whole" (one scalar mean/std) or "none".
    optimizer: AdamW keyword arguments (default lr 1e-3, weight_decay 1e-3).
    scheduler: None (constant LR, the paper), "cosine" or "warmup_cosine" (per epoch, over
    trainer.max_epochs, with ``warmup_epochs`` linear warm-up epochs) or "onecycle" (per step:
    torch's OneCycleLR over the run, peak at 5 %, cosine down to 1e-4 of the peak; Pointcept's PTv3
    classification schedule).
    block_lr_scale: learning-rate factor of the transformer blocks (Pointcept trains them at 0.1).
    label_smoothing: cross-entropy label smoothing in training (evaluation losses are unsmoothed).
    eval_views: evaluation views averaged (mean of probabilities): the clean cloud plus
    ``eval_views - 1`` copies augmented with ``eval_augment`` (seeded per batch), for val, test, predict.
    class_names: names for per-class metrics and plots (default: the datamodule's, else "0", "1", ...).
    top_k: number of (class, probability) pairs ``predict_step`` returns.
    log_media: log a confusion matrix and a few clouds to W&B (only with a WandbLogger).
    seed: the training seed (default: the one ``seed_everything`` set). Initialisation and every
    training draw derive from it and their purpose, never from the global RNG's history:
    ("init"), ("augment", epoch, batch, rank) and ("model", epoch, batch, rank) for dropout,
    drop-path and curve order; so a run does not depend on what ran before (e.g. fitting the store).
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 32,
        backbone: dict[str, Any] | None = None,
        head_hidden: list[int] | None = None,
        augment: dict[str, Any] | None = DEFAULT_AUGMENT,
        normalisation: Literal["per_dim", "whole", "none"] = "per_dim",
        optimizer: dict[str, Any] | None = None,
        scheduler: Literal["cosine", "warmup_cosine", "onecycle"] | None = None,
        warmup_epochs: int = 0,
        block_lr_scale: float = 1.0,
        label_smoothing: float = 0.0,
        eval_views: int = 1,
        eval_augment: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        top_k: int = 5,
        log_media: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("latent_dim", latent_dim), ("top_k", top_k)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ClassifierConfigError(f"{name} must be a positive int, got {value!r}")
        if normalisation not in NORMALISATIONS:
            raise ClassifierConfigError(f"normalisation must be one of {list(NORMALISATIONS)}, got {normalisation!r}")
        if scheduler not in SCHEDULERS:
            raise ClassifierConfigError(f"scheduler must be one of {list(SCHEDULERS)}, got {scheduler!r}")
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ClassifierConfigError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        if not isinstance(block_lr_scale, (int, float)) or not block_lr_scale > 0:
            raise ClassifierConfigError(f"block_lr_scale must be > 0, got {block_lr_scale!r}")
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ClassifierConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if not isinstance(eval_views, int) or eval_views < 1:
            raise ClassifierConfigError(f"eval_views must be an int >= 1, got {eval_views!r}")
        if eval_views > 1 and not eval_augment:
            raise ClassifierConfigError("eval_views > 1 needs eval_augment (the augmentations of the extra views)")
        if eval_augment and "arcmix" in eval_augment:
            raise ClassifierConfigError("eval_augment cannot mix clouds (arcmix)")
        if class_names is not None and len(class_names) != num_classes:
            raise ClassifierConfigError(f"class_names has {len(class_names)} names for {num_classes} classes")
        head_hidden = list(head_hidden or [])
        if not all(isinstance(h, int) and h > 0 for h in head_hidden):
            raise ClassifierConfigError(f"head_hidden must be a list of positive ints, got {head_hidden!r}")
        self.save_hyperparameters()
        self.seed = run_seed(seed)
        self.hparams.seed = self.seed  # the checkpoint records the seed actually used

        self.num_classes, self.latent_dim, self.normalisation = num_classes, latent_dim, normalisation
        self.class_names = list(class_names) if class_names is not None else None
        self.optimizer_kwargs = self._optimizer_kwargs(optimizer)
        self.augment = build_augmentations(augment, num_classes=num_classes)
        self.eval_augment = build_augmentations(eval_augment)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init"))
            self.backbone = self._build_backbone(backbone)
            widths = [int(self.backbone.out_channels), *head_hidden]
            layers: list[nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b), nn.GELU()]
            self.head = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))

        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer("latent_stats_ready", torch.tensor(False))
        self._stats_ready = False
        self.register_load_state_dict_post_hook(ARCClassifier._after_load)
        self.decoder_hash: str | None = None  # the decoder of the training clouds (saved in checkpoints)

        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self._media_clouds: CloudBatch | None = None

    # ------------------------------------------------------------ construction

    @staticmethod
    def _optimizer_kwargs(optimizer: dict[str, Any] | None) -> dict[str, Any]:
        kwargs = {"lr": 1e-3, "weight_decay": 1e-3, **(optimizer or {})}
        valid = [k for k in inspect.signature(torch.optim.AdamW).parameters if k != "params"]
        bad = sorted(set(kwargs) - set(valid))
        if bad:
            raise ClassifierConfigError(f"optimizer: unknown AdamW parameter(s) {bad}; valid: {valid}")
        if not isinstance(kwargs["lr"], (int, float)) or not kwargs["lr"] > 0:
            raise ClassifierConfigError(f"optimizer: lr must be > 0, got {kwargs['lr']!r}")
        return kwargs

    def _build_backbone(self, backbone: dict[str, Any] | None) -> nn.Module:
        cls = _backbone_class()
        params = inspect.signature(cls).parameters
        kwargs = {k: v for k, v in ARC_BACKBONE.items() if k in params}
        overrides = dict(backbone or {})
        bad = sorted(set(overrides) - set(params) | ({"in_channels"} & set(overrides)))
        if bad:
            valid = [k for k in params if k not in ("self", "in_channels")]
            raise ClassifierConfigError(f"backbone: unknown or fixed parameter(s) {bad}; valid: {valid}")
        kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
        try:
            backbone = cls(in_channels=self.latent_dim, **kwargs)
        except (TypeError, ValueError, AssertionError) as err:
            raise ClassifierConfigError(f"backbone: invalid settings {kwargs}: {err}") from err
        if "shift" in self.augment and getattr(backbone, "grid_origin", "frame") == "cloud":
            rank_zero_warn("augment: shift has no effect with backbone grid_origin 'cloud' (the voxel grid moves with "
                           "each cloud, so the backbone is translation-invariant); set grid_origin: frame")
        return backbone

    # ------------------------------------------------------------ latent statistics

    @staticmethod
    def _after_load(module: "ARCClassifier", incompatible_keys) -> None:
        module._stats_ready = bool(module.latent_stats_ready)

    def set_latent_stats(self, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> None:
        """Set the train-only latent statistics: per-dim mean [z] and std [z] (population std).

        With normalisation "whole" they are pooled into one scalar mean/std over all entries
        (every dimension has the same number of entries). std is floored at 1e-6.
        """
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten().cpu()
        std = torch.as_tensor(std, dtype=torch.float64).flatten().cpu()
        if mean.numel() != self.latent_dim or std.numel() != self.latent_dim:
            raise ClassifierConfigError(
                f"latent stats must have {self.latent_dim} entries (latent_dim), got mean {mean.numel()}, std {std.numel()}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or bool((std < 0).any()):
            raise ClassifierConfigError("latent stats must be finite with std >= 0")
        if self.normalisation == "whole":
            pooled = mean.mean()
            std = ((std**2 + mean**2).mean() - pooled**2).clamp(min=0).sqrt().expand(self.latent_dim)
            mean = pooled.expand(self.latent_dim)
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float().clamp(min=1e-6))
        self.latent_stats_ready.fill_(True)
        self._stats_ready = True

    def normalise(self, lat: Tensor) -> Tensor:
        """[N, z] raw latents -> normalised latents (per the ``normalisation`` setting)."""
        if self.normalisation == "none":
            return lat
        if not self._stats_ready:
            raise ClassifierConfigError(
                f"normalisation {self.normalisation!r} needs latent statistics: give the datamodule a "
                "`latent_stats` (mean [z], std [z]) attribute, call set_latent_stats(), or use normalisation='none'"
            )
        return (lat - self.latent_mean) / self.latent_std

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        stats = getattr(datamodule, "latent_stats", None)
        if stats is not None and not self._stats_ready:
            mean, std = stats
            self.set_latent_stats(mean, std)
        dm_classes = getattr(datamodule, "num_classes", None)
        if isinstance(dm_classes, int) and dm_classes != self.num_classes:
            raise ClassifierConfigError(f"the datamodule has {dm_classes} classes, the classifier {self.num_classes}")
        names = getattr(datamodule, "class_names", None)
        if self.class_names is None and names is not None and len(names) == self.num_classes:
            self.class_names = [str(n) for n in names]

    def on_fit_start(self) -> None:
        if self.normalisation != "none" and not self._stats_ready:
            self.normalise(torch.zeros(0, self.latent_dim))  # raises the explanatory error
        self.check_decoder()

    # ------------------------------------------------------------ decoder of the clouds

    def check_decoder(self) -> None:
        """Adopt the datamodule's decoder hash (first fit), or raise if its clouds come from another decoder:
        latents of two decoders are not comparable, so a classifier only reads clouds of its own."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        served = getattr(datamodule, "decoder_hash", None)
        if served is None:
            return
        if self.decoder_hash is None:
            self.decoder_hash = served
        elif served != self.decoder_hash:
            raise ClassifierConfigError(
                f"this classifier was trained on clouds of decoder {self.decoder_hash[:12]}, but the data's clouds "
                f"come from decoder {served[:12]}; their latents are not comparable. Pass the training decoder "
                "with --data.decoder PATH (e.g. to evaluate on a new canvas)"
            )

    def on_validation_start(self) -> None:
        self.check_decoder()

    def on_test_start(self) -> None:
        self.check_decoder()

    def on_predict_start(self) -> None:
        self.check_decoder()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["arc_decoder_hash"] = self.decoder_hash

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.decoder_hash = checkpoint.get("arc_decoder_hash")

    # ------------------------------------------------------------ model

    def check_batch(self, batch: CloudBatch, labels: bool = True) -> CloudBatch:
        """Raise :class:`~arc.cloud.CloudError` for a batch the classifier cannot take (``labels``: check them too)."""
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
        """[B, classes] logits from positions [N, 2] (row, col), normalised latents [N, z] and offsets [B]."""
        coord = torch.cat([pos.float(), pos.new_zeros(pos.shape[0], 1, dtype=torch.float32)], dim=1)
        point = self.backbone(dict(coord=coord, feat=feat.float(), offset=offset))
        return self.head(_mean_pool(point.feat, point.offset))

    def forward(self, batch: CloudBatch) -> Tensor:
        """[B, classes] logits of a batch with raw latents (normalised here, never augmented); labels unused."""
        self.check_batch(batch, labels=False)
        return self.classify(batch.pos, self.normalise(batch.lat), batch.offset)

    # ------------------------------------------------------------ steps

    def training_loss(self, batch: CloudBatch, seed: int | None = None) -> Tensor:
        """Scalar loss of a raw batch: augment (normalising on the way), classify, soft-target cross entropy.

        ``seed`` seeds the augmentations (:class:`arc.augment.Augmentations`); None: the global RNG.
        """
        self.check_batch(batch)
        mixed = self.augment(batch, normalise=self.normalise, seed=seed)
        logits = self.classify(mixed.pos, mixed.lat, mixed.offset)
        return self.cross_entropy(logits, mixed.label, self.hparams.label_smoothing)

    def cross_entropy(self, logits: Tensor, label: Tensor, smoothing: float = 0.0) -> Tensor:
        """Mean cross entropy of [B, classes] logits against [B] labels or [B, classes] soft targets.

        Always the soft-target form: it has no ``nll_loss``, which has no deterministic CUDA kernel.
        """
        target = soft_labels(label, self.num_classes).to(logits.dtype)
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    def evaluate_logits(self, batch: CloudBatch, batch_idx: int = 0) -> Tensor:
        """[B, classes] log of the mean class probabilities over the evaluation views of a raw batch.

        One view (``eval_views`` = 1) gives the log-softmax of the clean cloud's logits.
        """
        lat = self.normalise(batch.lat)
        log_probs = F.log_softmax(self.classify(batch.pos, lat, batch.offset).float(), dim=1)
        views = self.hparams.eval_views
        if views == 1:
            return log_probs
        probs = log_probs.exp()
        for view in range(1, views):
            seed = derive_seed(self.seed, "eval-view", batch_idx, view)
            shown = self.eval_augment(replace(batch, lat=lat), seed=seed)
            probs = probs + torch.softmax(self.classify(shown.pos, shown.lat, shown.offset).float(), dim=1)
        return (probs / views).log()

    def training_step(self, batch: CloudBatch, batch_idx: int) -> Tensor:
        draw = (self.current_epoch, batch_idx, self.global_rank)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, "model", *draw))  # dropout, drop-path, curve order
            loss = self.training_loss(batch, seed=derive_seed(self.seed, "augment", *draw))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: CloudBatch, stage: str, batch_idx: int) -> Tensor:
        self.check_batch(batch)
        logits = self.evaluate_logits(batch, batch_idx)
        if batch.label.ndim != 1:
            raise CloudError(f"{stage} labels must be class indices [B], got shape {tuple(batch.label.shape)}")
        loss = self.cross_entropy(logits, batch.label)
        preds = logits.argmax(1)
        acc, acc_macro, confusion = (
            (self.val_acc, self.val_acc_macro, self.val_confusion)
            if stage == "val"
            else (self.test_acc, self.test_acc_macro, self.test_confusion)
        )
        acc(preds, batch.label)
        acc_macro(preds, batch.label)
        confusion.update(preds, batch.label)
        n = len(batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log(f"{stage}/acc_macro", acc_macro, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: CloudBatch, batch_idx: int) -> Tensor:
        loss = self._evaluate(batch, "val", batch_idx)
        if batch_idx == 0 and self._wandb() is not None:
            self._media_clouds = batch.select(torch.arange(min(4, len(batch)))).to("cpu")
        return loss

    def test_step(self, batch: CloudBatch, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", batch_idx)

    def predict_step(self, batch: CloudBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """dict(index [B], label [B], probs [B, classes], topk_class [B, k], topk_prob [B, k])."""
        self.check_batch(batch, labels=False)
        probs = self.evaluate_logits(batch, batch_idx).exp()
        top = probs.topk(min(self.hparams.top_k, self.num_classes), dim=1)
        label = batch.label if batch.label.ndim == 1 else batch.label.argmax(1)
        return dict(index=batch.index, label=label, probs=probs, topk_class=top.indices, topk_prob=top.values)

    # ------------------------------------------------------------ epoch ends

    def names(self) -> list[str]:
        return self.class_names if self.class_names is not None else [str(i) for i in range(self.num_classes)]

    def on_validation_epoch_end(self) -> None:
        matrix = self.val_confusion.compute().cpu()
        self.val_confusion.reset()
        self._log_media(matrix)

    def on_test_epoch_end(self) -> None:
        matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        support = matrix.sum(1)
        for i, name in enumerate(self.names()):
            if support[i] > 0:  # a class absent from the test split has no accuracy
                self.log(f"test/acc_class/{name}", matrix[i, i].float() / support[i], sync_dist=False)
        self.test_confusion_matrix = matrix
        self._log_media(matrix, stage="test")

    def _wandb(self):
        from lightning.pytorch.loggers import WandbLogger

        if not self.hparams.log_media or self._trainer is None or self.trainer.sanity_checking:
            return None
        return next((lg for lg in self.loggers if isinstance(lg, WandbLogger)), None)

    def _log_media(self, matrix: Tensor, stage: str = "val") -> None:
        """Confusion matrix and a few clouds to W&B; rank 0 only; any failure becomes a warning."""
        logger = self._wandb()
        if logger is None or self.global_rank != 0:
            return
        try:
            images = {f"{stage}/confusion_matrix": confusion_image(matrix, self.names())}
            clouds, self._media_clouds = self._media_clouds, None
            if clouds is not None and stage == "val":
                lat = self.normalise(clouds.lat.to(self.device)).cpu()
                shown = replace(clouds, lat=lat)
                titles = [self.names()[int(c)] for c in clouds.label]
                images[f"{stage}/clouds"] = cloud_scatter(shown, titles)
            for key, image in images.items():
                logger.log_image(key=key, images=[image], step=self.global_step)
        except Exception as err:  # media are optional: never stop training for them
            rank_zero_warn(f"could not log W&B media: {type(err).__name__}: {err}")

    # ------------------------------------------------------------ optimisation

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: the transformer blocks at ``block_lr_scale`` x lr, everything else at lr."""
        lr = self.optimizer_kwargs["lr"]
        blocks = [p for n, p in self.named_parameters() if n.startswith("backbone.stages.")]
        ids = {id(p) for p in blocks}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": blocks, "lr": lr * self.hparams.block_lr_scale}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), **self.optimizer_kwargs)
        name = self.hparams.scheduler
        if name is None:
            return optimizer
        if name == "onecycle":
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=int(self.trainer.estimated_stepping_batches), pct_start=0.05, div_factor=10.0,
                final_div_factor=1000.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ClassifierConfigError(f"scheduler {name!r} needs trainer.max_epochs >= 1, got {epochs!r}")
        warmup = self.hparams.warmup_epochs if name == "warmup_cosine" else 0
        if warmup >= epochs:
            raise ClassifierConfigError(f"warmup_epochs ({warmup}) must be < max_epochs ({epochs})")
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
        if warmup:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
            schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        else:
            schedule = cosine
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


class PredictionWriter(BasePredictionWriter):
    """Write ``predict_step`` outputs to a CSV: index, label, pred, top1_class, top1_prob, ... topk_prob.

    Classes are written by name when the module has class names. With several
    ranks, each writes ``<stem>-rank<r>.csv``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self._file = None
        self._writer = None

    def _rank_path(self, trainer: pl.Trainer) -> Path:
        if trainer.world_size > 1:
            return self.path.with_name(f"{self.path.stem}-rank{trainer.global_rank}{self.path.suffix}")
        return self.path

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self._rank_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="")
        self._writer = csv.writer(self._file)
        k = min(int(getattr(pl_module.hparams, "top_k", 5)), int(pl_module.hparams.num_classes))
        header = ["index", "label", "pred"]
        for i in range(1, k + 1):
            header += [f"top{i}_class", f"top{i}_prob"]
        self._writer.writerow(header)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        names = pl_module.names() if hasattr(pl_module, "names") else None
        index = prediction["index"].tolist()
        label = prediction["label"].tolist()
        classes = prediction["topk_class"].tolist()
        probs = prediction["topk_prob"].tolist()
        for i in range(len(index)):
            row: list[Any] = [index[i], label[i], classes[i][0]]
            for c, p in zip(classes[i], probs[i]):
                row += [names[c] if names else c, f"{p:.6f}"]
            self._writer.writerow(row)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
