"""Lightning callbacks of the classifier: the prediction CSV and the W&B media.

``PredictionWriter`` writes ``predict_step`` outputs; ``WandbMedia`` logs the validation/test
confusion matrices (each epoch) and a scatter of a few validation clouds (once) to a WandbLogger.
Both read only what :class:`arc.classifier.ARCClassifier` exposes: ``names()``, ``confusion``,
``hparams.top_k``/``num_classes`` and its model's normaliser.
"""
from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from arc.cloud import CloudBatch
from arc.viz import cloud_scatter, confusion_image

__all__ = ["PredictionWriter", "WandbMedia"]


class PredictionWriter(BasePredictionWriter):
    """Write ``predict_step`` outputs to a CSV: index, label, pred, top1_class, top1_prob, ... topk_prob, error.

    Classes are written by name when the module has class names. The images of the predicted split
    that anchoring skipped (unreadable, too small, ...) get a row with only ``index`` and ``error``
    (rank 0), so every input has a row. With several ranks, each writes ``<stem>-rank<r>.csv``.
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
        self._columns = len(header)
        self._writer.writerow([*header, "error"])

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
            self._writer.writerow([*row, ""])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        store = getattr(datamodule, "cloud_store", None)
        if self._writer is not None and store is not None and trainer.global_rank == 0:
            for index in store.skipped.get(getattr(datamodule, "predict_split", ""), []):
                reason = "skipped at anchoring (unreadable or unusable image; the anchoring log says why)"
                self._writer.writerow([index, *[""] * (self._columns - 1), reason])
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class WandbMedia(Callback):
    """W&B extras: the confusion matrix of every validation and test epoch, ``clouds`` validation clouds
    (once), a histogram of the fitted clouds' reconstruction PSNR [dB] per split, and the best ``val/acc``
    in the run summary.

    Only with a :class:`~lightning.pytorch.loggers.WandbLogger`, on rank 0, never during the sanity
    check; a failure to draw becomes a warning (media never stop training).
    """

    def __init__(self, clouds: int = 4) -> None:
        self.clouds = clouds
        self._shown: Optional[CloudBatch] = None
        self._clouds_logged = False

    @staticmethod
    def _logger(trainer: pl.Trainer) -> Optional[WandbLogger]:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger.experiment.define_metric("val/acc", summary="max")
        self._log_psnr(trainer, ("train", "val"))

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_psnr(trainer, ("test",))

    def _log_psnr(self, trainer: pl.Trainer, splits: tuple[str, ...]) -> None:
        """``fit/psnr_hist/<split>``: the PSNR of every fitted cloud the datamodule serves (ARCDataModule)."""
        logger, store = self._logger(trainer), getattr(trainer.datamodule, "cloud_store", None)
        if logger is None or store is None:
            return
        try:
            import wandb

            from arc.data.clouds import CloudDataset

            for split in (s for s in splits if store.has_split(s)):
                psnr = CloudDataset(store, split).psnr.numpy()
                logger.experiment.log({f"fit/psnr_hist/{split}": wandb.Histogram(psnr)}, commit=False)
        except Exception as err:  # media are optional
            rank_zero_warn(f"could not log the PSNR histogram: {type(err).__name__}: {err}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        shown = batch_idx == 0 and not self._clouds_logged and self.clouds and isinstance(batch, CloudBatch)
        if shown and self._logger(trainer) is not None:  # clouds only: the baselines' batches are tensors
            self._shown = batch.select(torch.arange(min(self.clouds, len(batch)))).to("cpu")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = self._logger(trainer)
        if logger is None or not hasattr(pl_module, "confusion"):  # a module without confusion matrices (baselines)
            return
        try:
            names = pl_module.names()
            images = {f"{stage}/confusion_matrix": confusion_image(pl_module.confusion[stage], names)}
            if self._shown is not None and stage == "val":
                clouds, self._shown = self._shown, None
                lat = pl_module.model.normaliser(clouds.lat.to(pl_module.device)).cpu()
                images["val/clouds"] = cloud_scatter(replace(clouds, lat=lat), [names[int(c)] for c in clouds.label])
                self._clouds_logged = True
            for key, image in images.items():
                logger.log_image(key=key, images=[image], step=trainer.global_step)
        except Exception as err:  # media are optional: never stop training for them
            rank_zero_warn(f"could not log W&B media: {type(err).__name__}: {err}")
