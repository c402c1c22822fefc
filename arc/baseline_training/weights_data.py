"""Fitted INR weights as a classification dataset: ARC's image splits -> weight store -> standardised vectors.

The samples may be images, 1-D signals or 3-D volumes (the source's ``dims``): the INRs then take D
coordinates and P = :meth:`~arc.baselines.inr.INRConfig.param_count` (C, D).

:class:`WeightDataModule` opens the image source through :class:`arc.data.module.SourceDataModule`, the
base of ARC's own data modules (``source``, ``root``, ``source_options``, ``canvas``, ``val_fraction``,
``seed``), so its train / val / test are ARC's; it fits (or reuses) the weight store of :mod:`arc.baselines.weight_store`
for every split a stage reads plus train, and serves (weight vector [P], label) pairs standardised
per dimension with the train split's mean and std (:func:`weight_statistics`), as ARC standardises
latents with train-only statistics, or per weight tensor (:func:`tensor_statistics`, ``standardise: tensor``,
for the permutation-invariant reader). ``latent_dim`` is P, the width of a sample's representation
(the CLI links it into the classifier's input width, as for ARC's latents). Fitting runs on the
process's rank alone (no split of the shards across DDP ranks yet, unlike ARC's clouds).

The numeric parts (:func:`weight_statistics`, :func:`standardise`) take tensors and know no Lightning,
so the XGBoost baseline reads the same arrays through :meth:`WeightDataModule.arrays`.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from arc.baselines.fitting import INRFitConfig
from arc.baselines.inr import INRConfig
from arc.baselines.weight_store import WeightStore, default_weight_store_dir, fit_weight_store, weight_store_key
from arc.data.module import EpochShuffle, SourceDataModule, with_data_seed
from arc.data.sources import SPLITS
from arc.runs import ensure_writable
from arc.seeding import run_seed
from arc.settings import as_settings

log = logging.getLogger(__name__)

MIN_STD = 1e-6
"""Floor of a dimension's train std (a weight every fit leaves unchanged would otherwise divide by 0)."""


def weight_statistics(train: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean [P] and std [P] (float64; floored at :data:`MIN_STD`) of the train vectors [N, P]."""
    if train.ndim != 2 or len(train) < 2:
        raise ValueError(f"train weights must be [N >= 2, P], got {tuple(train.shape)}")
    train = train.double()  # near-constant dimensions (a shared init, few steps) need the precision
    return train.mean(0), train.std(0).clamp_min(MIN_STD)


def tensor_statistics(train: Tensor, shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Like :func:`weight_statistics`, but one mean and std per weight tensor (each layer's W, then b, of
    ``shapes`` [(out, in), ...]), repeated over its dimensions: [P], [P]. A scale per tensor commutes with
    permuting hidden neurons, so a permutation-invariant reader stays invariant on the standardised vectors."""
    if train.ndim != 2 or len(train) < 2:
        raise ValueError(f"train weights must be [N >= 2, P], got {tuple(train.shape)}")
    sizes = [n for out, inp in shapes for n in (out * inp, out)]
    parts = train.double().split(sizes, dim=1)
    mean = torch.cat([part.mean().expand(n) for part, n in zip(parts, sizes)])
    std = torch.cat([part.std().clamp_min(MIN_STD).expand(n) for part, n in zip(parts, sizes)])
    return mean, std


STANDARDISE = ("dimension", "tensor")  # data.standardise: train statistics per weight or per weight tensor


def standardise(weights: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(weights - mean) / std, [N, P] float32."""
    return ((weights.double() - mean) / std).float()


class BaselineDataModule(SourceDataModule, ABC):
    """ARC's source and splits (:class:`arc.data.module.SourceDataModule`) with ``batch_size`` and ``num_workers``;
    serves :meth:`dataset` of each split (train shuffled per epoch from the training seed, as ARC's loaders)."""

    collate_fn: Optional[Callable] = None

    def __init__(self, source: str = "digits", root: str = "data", download: bool = False,
                 source_options: Optional[dict[str, Any]] = None, canvas: Optional[dict[str, Any]] = None,
                 val_fraction: float = 0.1, batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(source, root, download, source_options, canvas, val_fraction, seed)
        if batch_size < 1 or num_workers < 0:
            raise ValueError("data.batch_size must be >= 1 and data.num_workers >= 0")
        self.batch_size, self.num_workers = batch_size, num_workers

    @abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The items of ``split`` (each baseline's own)."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.collate_fn,
                          sampler=EpochShuffle(len(dataset), run_seed()) if shuffle else None,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class WeightDataModule(BaselineDataModule):
    """Standardised fitted-INR weight vectors of ARC's splits, with labels.

    Args:
        source, root, download, source_options, canvas, val_fraction, seed: as
            :class:`arc.data.module.ImageDataModule` (the same splits; ``seed`` also seeds the fits).
        inr: the INR architecture (:class:`arc.baselines.inr.INRConfig`; a mapping of its keys).
        fit: the fitting settings (:class:`arc.baselines.fitting.INRFitConfig`; a mapping of its keys).
        store: an explicit weight store directory; default ``root/weights/<source>-<key>``.
        shard_size: images per store shard.
        batch_size, num_workers: the loaders'.
        fit_device: device for fitting ("auto": the trainer's device, else CPU).
        standardise: train statistics per weight ("dimension") or per weight tensor ("tensor").
    """

    def __init__(
        self,
        source: str = "digits",
        root: str = "data",
        download: bool = False,
        source_options: Optional[dict[str, Any]] = None,
        canvas: Optional[dict[str, Any]] = None,
        val_fraction: float = 0.1,
        inr: INRConfig = INRConfig(),
        fit: INRFitConfig = INRFitConfig(),
        store: Optional[str] = None,
        shard_size: int = 1024,
        batch_size: int = 256,
        num_workers: int = 0,
        fit_device: str = "auto",
        standardise: str = "dimension",
        seed: int = 0,
    ) -> None:
        super().__init__(source, root, download, source_options, canvas, val_fraction, batch_size, num_workers, seed)
        if shard_size < 1:
            raise ValueError(f"data.shard_size must be >= 1, got {shard_size}")
        if standardise not in STANDARDISE:
            raise ValueError(f"data.standardise must be one of {list(STANDARDISE)}, got {standardise!r}")
        self.standardise = standardise
        self.inr = as_settings(INRConfig, inr, "data.inr")
        self.fit = with_data_seed(as_settings(INRFitConfig, fit, "data.fit"), seed, "data.fit")
        self.store_path, self.shard_size = store, shard_size
        self.fit_device = fit_device
        self.weight_store: Optional[WeightStore] = None
        self.weight_stats: Optional[tuple[Tensor, Tensor]] = None
        self._served: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def latent_dim(self) -> int:
        """P, the length of one flat weight vector (the classifier's input width)."""
        return self.inr.param_count(self.source.channels, self.source.dims)

    @property
    def weight_store_dir(self) -> Path:
        if self.store_path:
            return Path(self.store_path)
        key = weight_store_key(self.source.identity, self.inr, self.fit, self.shard_size, self.source.dims)
        return default_weight_store_dir(self.root, self.source_spec, key)

    def _device(self) -> torch.device:
        if self.fit_device != "auto":
            return torch.device(self.fit_device)
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def prepare_weights(self, splits: Sequence[str] = SPLITS) -> dict[str, tuple[Tensor, Tensor]]:
        """Fit (or reuse) train and ``splits`` in the store, set the train statistics and return
        split -> (standardised weights [N, P], labels [N]) for ``splits``."""
        wanted = [s for s in splits if s not in self._served]
        if wanted:
            if self.weight_store is None:
                path = self.weight_store_dir
                if not (path / "manifest.json").exists():
                    ensure_writable(path.parent, "data.root", "set --data.root or ARC_DATA to a writable folder")
                self.weight_store = WeightStore.create_or_open(path, self.source.identity, self.inr, self.fit,
                                                               self.source.channels, self.shard_size, self.source.dims)
            store = self.weight_store
            for split in dict.fromkeys(["train", *wanted]):  # verifies every shard; fits the missing or damaged ones
                if split not in store.counts:
                    log.info("fitting %s INRs of %s split %s into %s", self.inr.kind, self.source_spec, split, store.path)
                fit_weight_store(store, split, self.source.split(split), self.inr, self.fit, device=self._device())
            if self.weight_stats is None:
                train = store.collect("train")["weights"]
                self.weight_stats = (weight_statistics(train) if self.standardise == "dimension"
                                     else tensor_statistics(train, self.inr.shapes(self.source.channels, self.source.dims)))
            for split in wanted:
                stored = store.collect(split)
                self._served[split] = (standardise(stored["weights"], *self.weight_stats), stored["label"])
                log.info("%s: %d weight vectors, mean fit PSNR %.2f dB", split, len(stored["label"]),
                         float(stored["psnr"].mean()) if len(stored["psnr"]) else float("nan"))
        return {split: self._served[split] for split in splits}

    def representation_metrics(self) -> dict[str, float]:
        """What the weight store records of its fits (:meth:`WeightStore.fit_metrics`: ``fit/psnr_mean`` dB,
        ``fit/images_per_s``, ``repr/params_per_sample`` = P), written into a run's metrics.json by the CLI."""
        if self.weight_store is None:
            return {"repr/params_per_sample": float(self.latent_dim)}
        return self.weight_store.fit_metrics()

    def arrays(self, split: str) -> tuple[Tensor, Tensor]:
        """(standardised weights [N, P] float32, labels [N] int64) of ``split``."""
        return self.prepare_weights((split,))[split]

    def setup(self, stage: Optional[str] = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        self.prepare_weights(splits)

    def dataset(self, split: str) -> Dataset:
        return TensorDataset(*self.arrays(split))
