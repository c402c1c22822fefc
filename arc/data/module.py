"""Lightning DataModules: images -> (pretrained decoder) -> cloud store -> ragged cloud batches.

``ImageDataModule`` holds what names the images and the field; ``PretrainDataModule`` serves the
decoder-pretraining images; ``ARCDataModule`` chains the stages and serves CloudBatch loaders.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from arc.data.canvas import CanvasConfig
from arc.data.clouds import CloudDataset, collate_clouds
from arc.data.sources import SPLITS, ImageSource, open_source
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.pipeline import anchor_stage, default_decoder_path, open_store, pretrain_stage, pretraining_images, store_decoder
from arc.runs import ensure_writable
from arc.seeding import derive_generator, run_seed
from arc.settings import as_settings
from arc.store import CloudStore
from arc.store.cloud_store import fit_images_per_s
from arc.viz import log_reconstructions

log = logging.getLogger(__name__)


Seeded = TypeVar("Seeded", FitConfig, PretrainConfig)


def with_data_seed(settings: Seeded, seed: int, where: str) -> Seeded:
    """``settings`` with the representation seed ``data.seed``: one seed names a store.

    A ``seed`` of its own other than the default (0) and ``data.seed`` is an error, not silently replaced.
    """
    if settings.seed not in (0, seed):
        raise ValueError(f"{where}.seed ({settings.seed}) differs from data.seed ({seed}): set data.seed, "
                         "the representation seed of every stage")
    return replace(settings, seed=seed)


class SourceDataModule(L.LightningDataModule):
    """An image source and its splits (``source``, ``root``, ``download``, ``source_options``, ``canvas``,
    ``val_fraction``, ``seed``: see :class:`ImageDataModule`), opened on first use; ``num_classes``, ``class_names``.
    The base of ARC's data modules and of the baselines' (:mod:`arc.baselines`), so all read the same splits."""

    def __init__(self, source: str = "digits", root: str = "data", download: bool = False,
                 source_options: Optional[dict[str, Any]] = None, canvas: Optional[dict[str, Any]] = None,
                 val_fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.source_spec = source
        self.root = Path(root)
        self.download = download
        self.source_options = dict(source_options or {})
        self.canvas = canvas
        self.val_fraction = val_fraction
        self.seed = seed
        self._source: Optional[ImageSource] = None

    @property
    def source(self) -> ImageSource:
        if self._source is None:
            self._source = open_source(
                self.source_spec, root=str(self.root), download=self.download, val_fraction=self.val_fraction,
                seed=self.seed, canvas=self.canvas, **self.source_options,
            )
        return self._source

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    def prepare_data(self) -> None:
        if self.download:
            self.source  # torchvision sources download on open


class ImageDataModule(SourceDataModule):
    """The images and the field: source, canvas, splits, field and pretraining settings, decoder path.

    Args:
        source: data source string (``torchvision:MNIST``, ``imagefolder:PATH``, ``npz:PATH``, ``digits``, ``shapes`` ...).
        root: directory for downloads, decoders (``root/decoders``) and stores (``root/stores``).
        download: let torchvision sources download (needs internet).
        source_options: extra source options (e.g. ``{"size": 16}`` for digits, ``{"center_crop": 320}``).
        canvas: ``{"size": S, "mode": "centre"|"random"}`` to pad images onto an S×S canvas.
        val_fraction: share of train that becomes val when the source has no own val split.
        field / pretrain: the settings of :mod:`arc.field.config` (a mapping of their keys in Python).
        decoder: an explicit decoder checkpoint; default: the path keyed by (source, field, pretrain).
        fit_device: device for pretraining/fitting ("auto": the trainer's device, else CPU).
        seed: the representation seed: the val split, the pretraining subset and everything random per
            image (part of the store key). The training seed is ``seed_everything`` (see :mod:`arc.seeding`).
    """

    def __init__(
        self,
        source: str = "digits",
        root: str = "data",
        download: bool = False,
        source_options: Optional[dict[str, Any]] = None,
        canvas: Optional[dict[str, Any]] = None,
        val_fraction: float = 0.1,
        field: FieldConfig = FieldConfig(),
        pretrain: PretrainConfig = PretrainConfig(),
        decoder: Optional[str] = None,
        fit_device: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__(source, root, download, source_options, canvas, val_fraction, seed)
        self.field = as_settings(FieldConfig, field, "data.field")
        self.pretrain = with_data_seed(as_settings(PretrainConfig, pretrain, "data.pretrain"), seed, "data.pretrain")
        self.decoder = decoder
        self.fit_device = fit_device

    @property
    def latent_dim(self) -> int:
        return self.field.latent_dim

    @property
    def decoder_path(self) -> Path:
        if self.decoder:
            return Path(self.decoder)
        return default_decoder_path(self.source, self.field, self.pretrain, self.root)

    def distributed(self) -> tuple[int, int, Callable[[], None], torch.device]:
        """(global rank, world size, barrier, fitting device) from the attached trainer, if any."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1, lambda: None, torch.device("cpu" if self.fit_device == "auto" else self.fit_device)
        device = trainer.strategy.root_device if self.fit_device == "auto" else torch.device(self.fit_device)
        return trainer.global_rank, trainer.world_size, trainer.strategy.barrier, device


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(size)`` per epoch, drawn from ``derive_generator(seed, "data-order", epoch)``.

    The order depends only on (seed, epoch): not on the loader's workers, on what else drew
    random numbers, or on where a resumed run restarts. Lightning calls ``set_epoch`` before
    each training epoch (and wraps the sampler in a distributed one under DDP).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = derive_generator(self.seed, "data-order", self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ARCDataModule(ImageDataModule):
    """Chains the stages in ``setup()`` (docs/architecture.md, "Chaining the stages") and serves CloudBatch loaders.

    Rank 0 pretrains the decoder (unless it exists) while the others wait; every rank fits the
    store shards k ≡ rank (mod world size) of the splits the stage reads (``setup(stage)``); rank 0
    writes the train-only latent statistics once train is fitted.
    Takes the arguments of :class:`ImageDataModule` (passed through ``kwargs``) plus:

    Args:
        fit: the fitting settings (:class:`arc.field.config.FitConfig`; a mapping of its keys in Python).
        store: an explicit store directory; default: keyed by (source, field, fit, decoder) under root.
        shard_size: images per store shard.
        batch_size: clouds per batch; num_workers: DataLoader workers.
        predict_split: the split ``predict`` runs on.
        test_canvas: a canvas for the test split alone (``{"size": S, "mode": "random"}``: paper Exp. 5, a model
            trained on centred images tested on displaced ones); its clouds are fitted with the training decoder
            into a store of their own. None: the test split has the training canvas.
    """

    def __init__(
        self,
        fit: FitConfig = FitConfig(),
        store: Optional[str] = None,
        shard_size: int = 1024,
        batch_size: int = 1024,
        num_workers: int = 0,
        predict_split: str = "test",
        test_canvas: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if predict_split not in SPLITS:
            raise ValueError(f"data.predict_split must be one of {SPLITS}, got {predict_split!r}")
        self.fit = with_data_seed(as_settings(FitConfig, fit, "data.fit"), self.seed, "data.fit")
        self.store_path = store
        self.shard_size = shard_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_split = predict_split
        self.test_canvas = None if test_canvas is None else asdict(CanvasConfig.parse(test_canvas))  # checked now
        self._test_source: Optional[ImageSource] = None
        self.cloud_store: Optional[CloudStore] = None
        self.test_store: Optional[CloudStore] = None  # the test split's store when test_canvas is set
        self.latent_stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def stage_splits(self, stage: Optional[str]) -> tuple[str, ...]:
        """The splits a trainer stage reads: fit -> train, val; validate -> val; test -> test;
        predict -> ``predict_split``; anything else -> all."""
        return {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                "predict": (self.predict_split,)}.get(stage or "", SPLITS)

    @property
    def test_source(self) -> ImageSource:
        """The source of the test split: :attr:`source`, or the same images on ``test_canvas``."""
        if self.test_canvas is None:
            return self.source
        if self._test_source is None:
            self._test_source = open_source(
                self.source_spec, root=str(self.root), download=self.download, val_fraction=self.val_fraction,
                seed=self.seed, canvas=self.test_canvas, **self.source_options,
            )
        return self._test_source

    def prepare_clouds(self, splits: Sequence[str] = SPLITS) -> CloudStore:
        """Run the stages for ``splits`` (each cached): pretrain on rank 0, anchor on every rank, statistics on rank 0.

        Only the requested splits are fitted, so evaluating on a new canvas or source fits only its
        test split; the train statistics are set once train is fitted. Returns the store of ``splits``
        (with ``test_canvas``, the test split's store when only test is asked for).
        """
        if self.test_canvas is not None and "test" in splits:
            if self.test_store is None or not self.test_store.has_split("test"):
                self.test_store = self.anchor(self.test_source, ("test",), None)
            splits = tuple(split for split in splits if split != "test")
            if not splits:
                return self.test_store
        if self.cloud_store is not None and all(self.cloud_store.has_split(split) for split in splits):
            return self.cloud_store
        self.cloud_store = self.anchor(self.source, splits, self.store_path)
        if self.cloud_store.has_statistics:
            self.latent_stats = (self.cloud_store.latent_mean, self.cloud_store.latent_std)
        if "train" in splits:
            self._log_fit_psnr()
        return self.cloud_store

    def anchor(self, source: ImageSource, splits: Sequence[str], path: Optional[str]) -> CloudStore:
        """Fit ``splits`` of ``source`` with this config's decoder (pretrained from :attr:`source` on rank 0
        when needed) into the store at ``path`` (default: keyed by source, field, fit and decoder)."""
        rank, world_size, barrier, device = self.distributed()

        def open_this_store() -> CloudStore:
            return open_store(source, self.field, self.fit, self.decoder_path, self.root, path, self.shard_size)

        if "train" in splits:
            self.check_classes()
        if rank == 0:
            if not self.decoder_path.exists() or not (self.root / "stores").is_dir():  # checked before any work
                ensure_writable(self.root, "data.root", "set --data.root or ARC_DATA to a writable folder")
            if self.decoder is None:
                pretrain_stage(self.source, self.field, self.pretrain, self.decoder_path, device=device)
            open_this_store()  # created once, before the other ranks open it
        barrier()
        return anchor_stage(source, self.field, self.fit, open_this_store(), splits, rank, world_size, barrier, device)

    def check_classes(self) -> None:
        """Raise when a class has no train image (an empty class folder, or a label only val/test has): a model
        would get an output it never learns. Reads labels only, no image."""
        counts = torch.bincount(self.source.split("train").labels, minlength=self.num_classes)
        missing = [f"{self.class_names[c]!r}" for c in torch.nonzero(counts == 0).flatten().tolist()]
        if missing:
            raise ValueError(f"{self.source_spec}: class(es) {', '.join(missing)} have no train image; every class "
                             "needs train images (remove an empty class folder, or move images into train)")

    @property
    def decoder_hash(self) -> Optional[str]:
        """Content hash of the decoder the served clouds were fitted with (once a store is open)."""
        store = self.cloud_store or self.test_store
        return None if store is None else store.decoder_hash

    def _log_fit_psnr(self) -> None:
        """Log ``fit/psnr`` and a reconstruction panel of a few train clouds (rank 0, W&B)."""
        trainer = self.trainer
        if trainer is None or not trainer.loggers:
            return
        train = CloudDataset(self.cloud_store, "train")
        for logger in trainer.loggers:
            logger.log_metrics({"fit/psnr": float(train.psnr.mean()), "fit/psnr_min": float(train.psnr.min())}, step=0)
        shown = range(min(4, len(train)))
        decoder = store_decoder(self.cloud_store)
        originals = [self.source.split("train")[int(train.indices[i])][0] for i in shown]
        log_reconstructions(trainer.loggers, decoder, collate_clouds([train[i] for i in shown]), self.cloud_store.spacing,
                            self.field.neighbours, key="fit/reconstruction", step=0, originals=originals)

    def representation_metrics(self) -> dict[str, float]:
        """How well and at what size the served clouds represent their images, over every recorded split (the
        test split from its own store with ``test_canvas``): ``fit/psnr_mean`` (dB, mean over clouds),
        ``repr/latents_mean`` (latents per cloud), ``repr/params_per_sample`` (latents × latent dim) and, once the
        store recorded its fitting time, ``fit/images_per_s`` (wall time of the fitting runs); empty while no store
        is open or the stores hold no cloud."""
        stores = {split: self.test_store if split == "test" and self.test_canvas is not None else self.cloud_store
                  for split in SPLITS}
        splits = [CloudDataset(store, split) for split, store in stores.items() if store is not None and store.has_split(split)]
        if not sum(len(split) for split in splits):
            return {}
        latents = torch.cat([split.point_counts for split in splits]).double().mean().item()
        metrics = {"fit/psnr_mean": torch.cat([split.psnr for split in splits]).double().mean().item(),
                   "repr/latents_mean": latents, "repr/params_per_sample": latents * self.field.latent_dim}
        rate = fit_images_per_s(self.cloud_store) if self.cloud_store is not None else None
        return metrics if rate is None else {**metrics, "fit/images_per_s": rate}

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_clouds(self.stage_splits(stage))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """Clouds of ``split``; shuffled per epoch from the training seed (:class:`EpochShuffle`)."""
        dataset = CloudDataset(self.prepare_clouds((split,)), split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(dataset), run_seed()) if shuffle else None,
            collate_fn=collate_clouds,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)


class PretrainDataModule(ARCDataModule):
    """Serves the seeded train images of decoder pretraining; one batch = one optimisation step number.

    Takes the arguments of :class:`ARCDataModule` (one data block configures both stages, so the
    pretraining run writes the decoder the classifier run reads) and fits no clouds.
    """

    def setup(self, stage: Optional[str] = None) -> None:
        """Nothing to prepare: the images are read when the pretraining module asks for them."""

    def pretraining_images(self) -> tuple[list[torch.Tensor], list[int]]:
        """The readable images of the seeded pretraining subset of train and their source indices."""
        return pretraining_images(self.source, self.field, self.pretrain)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(self.pretrain.steps), batch_size=None, shuffle=False)
