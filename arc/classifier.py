"""The Lightning module that trains :class:`arc.model.ARCModel` on latent clouds.

Batches are :class:`~arc.cloud.CloudBatch` with raw latents. The model normalises them with the
train-only statistics it receives from the DataModule (``datamodule.latent_stats``) or
:meth:`ARCClassifier.set_latent_stats`, kept as buffers so a checkpoint predicts with the same
statistics. Augmentations (:mod:`arc.augment`) run in ``training_step`` only, on the device.
Media (confusion matrices, clouds) and the prediction CSV are callbacks (:mod:`arc.callbacks`).

Randomness: initialisation and every training draw derive from the training seed and their purpose,
never from the global RNG's history: ("init"), ("augment", epoch, batch, rank), ("model", epoch,
batch, rank) for dropout, drop-path and curve order, and ("transform", stage, ...) for the data
transforms; so a run does not depend on what ran before (e.g. fitting the store).

Logged: ``train/loss``, ``val/loss``, ``val/acc`` (top-1 micro), ``val/acc_macro``,
``test/loss``, ``test/acc``, ``test/acc_macro``, ``test/acc_class/<name>``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from arc.augment import build_augmentations, soft_labels
from arc.cloud import CloudBatch, CloudError
from arc.inference import INFERENCE_KEY, inference_record
from arc.model import ARCModel, BackboneFactory, ClassifierConfigError, Normalisation, backbone_spec, view_log_probs
from arc.optim import SCHEDULERS, OptimizerConfig, Scheduler, build_schedule, parameter_groups
from arc.seeding import derive_seed, run_seed
from arc.settings import as_settings

__all__ = ["ARCClassifier", "ClassifierConfigError", "DEFAULT_AUGMENT", "TRANSFORM_OPS"]

DEFAULT_AUGMENT: dict[str, Any] = {"mask": 0.3, "arcmix": {"alpha": 1.0}}
"""The paper's best recipe: masking 0.3 + ARCMix alpha 1 (thesis Table 5)."""

TRANSFORM_OPS = ("push", "rotate", "flip", "shift", "mask")
"""The ops a data transform (``fit_transform``, ``test_transform``) may use: they move or drop points only."""


def check_recipe(num_classes: int, scheduler: Any, warmup_epochs: Any, block_lr_scale: Any, label_smoothing: Any,
                 eval_views: Any, eval_augment: Any, class_names: Any, top_k: Any,
                 transforms: dict[str, Any] | None = None) -> None:
    """Raise :class:`ClassifierConfigError` for an invalid training or evaluation setting of :class:`ARCClassifier`
    (``transforms``: the data transforms by argument name)."""
    for name, transform in (transforms or {}).items():
        other = sorted(set(transform or {}) - set(TRANSFORM_OPS)) if isinstance(transform, dict) else None
        if other:
            raise ClassifierConfigError(f"{name} moves or drops points only ({', '.join(TRANSFORM_OPS)}), got {other}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ClassifierConfigError(f"top_k must be a positive int, got {top_k!r}")
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


def soft_cross_entropy(logits: Tensor, label: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Mean cross entropy of [B, classes] logits against [B] labels or [B, classes] soft targets.

    Always the soft-target form: it has no ``nll_loss``, which has no deterministic CUDA kernel.
    """
    return F.cross_entropy(logits, soft_labels(label, num_classes).to(logits.dtype), label_smoothing=smoothing)


def adopted_decoder_hash(recorded: str | None, trainer: Any) -> str | None:
    """The decoder hash a classifier keeps: ``recorded``, or the one of the clouds ``trainer``'s datamodule
    serves when none is recorded yet. Raises :class:`ClassifierConfigError` when they differ: latents of two
    decoders are not comparable, so a classifier only reads clouds of its own."""
    served = getattr(getattr(trainer, "datamodule", None), "decoder_hash", None) if trainer is not None else None
    if served is None or recorded is None or served == recorded:
        return recorded if served is None else served
    raise ClassifierConfigError(
        f"this classifier was trained on clouds of decoder {recorded[:12]}, but the data's clouds "
        f"come from decoder {served[:12]}; their latents are not comparable. Pass the training decoder "
        "with --data.decoder PATH (e.g. to evaluate on a new canvas)"
    )


class ARCClassifier(pl.LightningModule):
    """Train and evaluate an :class:`~arc.model.ARCModel` (thesis §3.3 and App. B; docs/architecture.md).

    num_classes, latent_dim, backbone, head_hidden, normalisation: the model (:class:`~arc.model.ARCModel`);
    ``backbone`` is a class_path/init_args in configs (default: the paper's PTv3, ``ptv3.PointTransformerV3``).
    augment: :func:`arc.augment.build_augmentations` config (None = no augmentation).
    optimizer: AdamW settings (:class:`arc.optim.OptimizerConfig`: lr 1e-3, weight_decay 1e-3, ...).
    scheduler: None (constant LR, the paper), "cosine", "warmup_cosine" (``warmup_epochs`` linear
    warm-up epochs) or "onecycle" (:func:`arc.optim.build_schedule`).
    block_lr_scale: learning-rate factor of the transformer blocks (Pointcept trains them at 0.1).
    label_smoothing: cross-entropy label smoothing in training (evaluation losses are unsmoothed).
    eval_views: evaluation views averaged (mean of probabilities): the clean cloud plus
    ``eval_views - 1`` copies augmented with ``eval_augment`` (seeded per batch), for val, test, predict.
    fit_transform: a data transform (:func:`arc.augment.build_augmentations` config of point ops only,
    ``TRANSFORM_OPS``) that defines the clouds trained and validated on, e.g. ``{"push": 50}`` for the paper's
    pushed training set (thesis Table 6): applied to train batches before ``augment`` (drawn afresh each epoch)
    and to val batches (seeded per batch, so the same every epoch).
    test_transform: the same for test batches only (Table 6's pushed test set, Table 8's shifted test clouds).
    class_names: names for per-class metrics and plots (default: the datamodule's, else "0", "1", ...).
    top_k: number of (class, probability) pairs ``predict_step`` returns.
    seed: the training seed (default: the one ``seed_everything`` set; see the module docstring).
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 32,
        backbone: BackboneFactory | None = None,
        head_hidden: list[int] | None = None,
        augment: dict[str, Any] | None = DEFAULT_AUGMENT,
        normalisation: Normalisation = "per_dim",
        optimizer: OptimizerConfig | None = None,
        scheduler: Scheduler | None = None,
        warmup_epochs: int = 0,
        block_lr_scale: float = 1.0,
        label_smoothing: float = 0.0,
        eval_views: int = 1,
        eval_augment: dict[str, Any] | None = None,
        fit_transform: dict[str, Any] | None = None,
        test_transform: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        top_k: int = 5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_recipe(num_classes, scheduler, warmup_epochs, block_lr_scale, label_smoothing, eval_views, eval_augment,
                     class_names, top_k, dict(fit_transform=fit_transform, test_transform=test_transform))
        self.save_hyperparameters()
        self.seed = run_seed(seed)
        self.hparams.seed = self.seed  # the checkpoint records the seed actually used
        self.hparams.backbone = backbone_spec(self.hparams.backbone)  # a description, loadable without pickle

        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.class_names = list(class_names) if class_names is not None else None
        self.optimizer_settings = as_settings(OptimizerConfig, optimizer, "optimizer")
        self.hparams.optimizer = asdict(self.optimizer_settings)  # plain values: checkpoints load without pickle
        self.augment = build_augmentations(augment, num_classes=num_classes)
        self.eval_augment = build_augmentations(eval_augment)
        self.transforms = {"fit": build_augmentations(fit_transform), "test": build_augmentations(test_transform)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init"))
            self.model = ARCModel(num_classes, latent_dim, backbone, head_hidden or [], normalisation)
        shifting = [name for name, ops in (("augment", self.augment), ("fit_transform", self.transforms["fit"]),
                                           ("test_transform", self.transforms["test"])) if "shift" in ops]
        if shifting and getattr(self.model.backbone, "grid_origin", "frame") == "cloud":
            rank_zero_warn(f"{', '.join(shifting)}: shift has no effect with backbone grid_origin 'cloud' (the voxel "
                           "grid moves with each cloud, so the backbone is translation-invariant); set grid_origin: frame")
        self.decoder_hash: str | None = None  # the decoder of the training clouds (saved in checkpoints)

        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_macro = MulticlassAccuracy(num_classes, average="macro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.confusion: dict[str, Tensor] = {}  # the last epoch's confusion matrix per stage [classes, classes]

    # ------------------------------------------------------------ latent statistics and data facts

    def set_latent_stats(self, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> None:
        """Set the train-only latent statistics: per-dim mean [z] and population std [z]."""
        self.model.normaliser.set_stats(mean, std)

    def normalise(self, lat: Tensor) -> Tensor:
        """[N, z] raw latents -> normalised latents (per the ``normalisation`` setting)."""
        return self.model.normaliser(lat)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        stats = getattr(datamodule, "latent_stats", None)
        if stats is not None and not self.model.normaliser.has_stats:
            mean, std = stats
            self.set_latent_stats(mean, std)
        dm_classes = getattr(datamodule, "num_classes", None)
        if isinstance(dm_classes, int) and dm_classes != self.num_classes:
            raise ClassifierConfigError(f"the datamodule has {dm_classes} classes, the classifier {self.num_classes}")
        names = getattr(datamodule, "class_names", None)
        if self.class_names is None and names is not None and len(names) == self.num_classes:
            self.class_names = [str(n) for n in names]

    def on_fit_start(self) -> None:
        self.normalise(torch.zeros(0, self.latent_dim, device=self.device))  # no statistics: the explanatory error
        self.check_decoder()

    # ------------------------------------------------------------ decoder of the clouds

    def check_decoder(self) -> None:
        """Adopt the datamodule's decoder hash (first fit), or raise if its clouds come from another decoder."""
        self.decoder_hash = adopted_decoder_hash(self.decoder_hash, self._trainer)

    on_validation_start = on_test_start = on_predict_start = check_decoder  # every evaluation reads clouds too

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["arc_decoder_hash"] = self.decoder_hash
        record = inference_record(self)  # decoder, field/fit settings, preprocessing: what arc.load needs
        if record is not None:
            checkpoint[INFERENCE_KEY] = record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.decoder_hash = checkpoint.get("arc_decoder_hash")

    # ------------------------------------------------------------ model

    def check_batch(self, batch: CloudBatch, labels: bool = True) -> CloudBatch:
        """Raise :class:`~arc.cloud.CloudError` for a batch the model cannot take (``labels``: check them too)."""
        return self.model.check_batch(batch, labels)

    def classify(self, pos: Tensor, feat: Tensor, offset: Tensor) -> Tensor:
        """[B, classes] logits from positions [N, 2], normalised latents [N, z] and offsets [B]."""
        return self.model.classify(pos, feat, offset)

    def forward(self, batch: CloudBatch) -> Tensor:
        """[B, classes] logits of a batch with raw latents (normalised, never augmented); labels unused."""
        return self.model(batch)

    # ------------------------------------------------------------ steps

    def training_loss(self, batch: CloudBatch, seed: int | None = None) -> Tensor:
        """Scalar loss of a raw batch: augment (normalising on the way), classify, soft-target cross entropy.

        ``seed`` seeds the augmentations (:class:`arc.augment.Augmentations`); None: the global RNG.
        """
        self.check_batch(batch)
        mixed = self.augment(batch, normalise=self.normalise, seed=seed)
        logits = self.classify(mixed.pos, mixed.lat, mixed.offset)
        return soft_cross_entropy(logits, mixed.label, self.num_classes, self.hparams.label_smoothing)

    def evaluate_logits(self, batch: CloudBatch, batch_idx: int = 0) -> Tensor:
        """[B, classes] log of the mean class probabilities over the evaluation views of a raw batch
        (:func:`arc.model.view_log_probs`; one view: the log-softmax of the clean cloud's logits)."""
        return view_log_probs(self.classify, self.normalise, batch, self.hparams.eval_views, self.eval_augment,
                              self.seed, batch_idx)

    def transformed(self, batch: CloudBatch, stage: str, batch_idx: int) -> CloudBatch:
        """The batch as the stage's data: ``fit_transform`` for "train" and "val", ``test_transform`` for "test".

        Seeded by ("transform", stage, epoch, batch, rank) in training, so each epoch draws afresh, and by
        ("transform", stage, batch, rank) in evaluation, so a val or test cloud is transformed alike every time.
        """
        transform = self.transforms["test" if stage == "test" else "fit"]
        if not len(transform):
            return batch
        draw = (self.current_epoch, batch_idx) if stage == "train" else (batch_idx,)
        return transform(batch, seed=derive_seed(self.seed, "transform", stage, *draw, self.global_rank))

    def training_step(self, batch: CloudBatch, batch_idx: int) -> Tensor:
        draw = (self.current_epoch, batch_idx, self.global_rank)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, "model", *draw))  # dropout, drop-path, curve order
            batch = self.transformed(self.check_batch(batch), "train", batch_idx)
            loss = self.training_loss(batch, seed=derive_seed(self.seed, "augment", *draw))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: CloudBatch, stage: str, batch_idx: int) -> Tensor:
        batch = self.transformed(self.check_batch(batch), stage, batch_idx)
        logits = self.evaluate_logits(batch, batch_idx)
        if batch.label.ndim != 1:
            raise CloudError(f"{stage} labels must be class indices [B], got shape {tuple(batch.label.shape)}")
        loss = soft_cross_entropy(logits, batch.label, self.num_classes)
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
        return self._evaluate(batch, "val", batch_idx)

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
        self._log_class_accuracy("val", self.val_confusion)

    def on_test_epoch_end(self) -> None:
        self._log_class_accuracy("test", self.test_confusion)

    def _log_class_accuracy(self, stage: str, confusion: MulticlassConfusionMatrix) -> None:
        """Keep the epoch's confusion matrix in ``confusion[stage]`` and log ``<stage>/acc_class/<name>``."""
        matrix = self.confusion[stage] = confusion.compute().cpu()
        confusion.reset()
        support = matrix.sum(1)
        for i, name in enumerate(self.names()):
            if support[i] > 0:  # a class absent from the split has no accuracy
                self.log(f"{stage}/acc_class/{name}", matrix[i, i].float() / support[i], sync_dist=False)

    # ------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        lr = self.optimizer_settings.lr
        groups = parameter_groups(self, lr, self.hparams.block_lr_scale, blocks="model.backbone.stages.")
        optimizer = torch.optim.AdamW(groups, **asdict(self.optimizer_settings))
        name = self.hparams.scheduler
        if name is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches if name == "onecycle" else 0
        schedule = build_schedule(optimizer, name, steps, self.trainer.max_epochs, self.hparams.warmup_epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
