"""Classify raw images with a trained model: everything inference needs, the :class:`Predictor`, and ``arc.load``.

A checkpoint carries, beside the classifier's weights and hyperparameters (model, evaluation views,
class names), an ``arc_inference`` record written by :func:`inference_record` at save time: the
decoder's weights and record, the field and fit settings and the preprocessing of the source
(:mod:`arc.inputs`). A bundle (:mod:`arc.bundle`) holds the same as safetensors + JSON.

``Predictor.predict`` reads each image as the sources do (:func:`arc.inputs.read_input`), fits its cloud with
the model's own decoder and settings (:func:`arc.field.fit_clouds`, batched, on the predictor's
device) unless the cloud cache (:mod:`arc.cache`) holds it, and classifies the clouds. An image's
fitting seed is derived from the hash of its pixels (:func:`arc.inputs.content_index`), so its cloud
does not depend on the other images of a call, nor on whether it came as a file or a tensor.
"""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import Tensor
from tqdm.auto import tqdm

from arc.augment import build_augmentations
from arc.cache import CloudCache, cloud_key, default_cache_dir
from arc.cloud import CloudBatch
from arc.data.canvas import CanvasConfig
from arc.data.images import ImageReadError
from arc.data.sources.readers import DEFAULT_MAX_PIXELS
from arc.field.config import FieldConfig, FitConfig
from arc.field.decoder import Decoder, DecoderMeta, decoder_hash, latent_start_header, load_decoder, read_latent_start
from arc.field.errors import DecoderFileError
from arc.field.fitting import cloud_settings, fit_clouds
from arc.inputs import MAX_READ_PIXELS, Input, content_index, read_input, skip_reason, training_size
from arc.model import ARCModel
from arc.signal_inputs import signal_settings

__all__ = ["INFERENCE_KEY", "ModelFileError", "Predictions", "Predictor", "Settings", "build_model", "check_decoder",
           "from_checkpoint", "inference_record", "load"]

INFERENCE_KEY = "arc_inference"
RECORD_FORMAT = "arc-inference/1"


class ModelFileError(ValueError):
    """A model file that is neither an arc checkpoint nor a bundle, or whose parts do not agree."""


def _plain(value: Any) -> dict[str, Any]:
    return asdict(value) if is_dataclass(value) else dict(value)


def inference_record(module: Any) -> Optional[dict[str, Any]]:
    """The ``arc_inference`` checkpoint entry of a classifier module from its trainer's datamodule, or None
    when there is none to read (no datamodule with a source, field, fit and decoder).

    Holds: ``format``, ``decoder`` (state dict, float32 CPU), ``decoder_header`` (:meth:`DecoderMeta.to_json`),
    ``latent_start`` (the decoder's map for ``fit.init: patch``: ``weight`` and its JSON ``header``; absent when
    the decoder carries none),
    ``field`` / ``fit`` (dicts), ``preprocess`` (:mod:`arc.inputs`; ``dims``, and for 1-D / 3-D sources their
    reading settings ``signal``, :mod:`arc.signal_inputs`) and ``class_names``.
    """
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None)
    if not all(hasattr(datamodule, name) for name in ("field", "fit", "decoder_path", "source")):
        return None
    try:
        decoder, meta = load_decoder(datamodule.decoder_path)
        if module.decoder_hash is not None and meta.hash != module.decoder_hash:
            raise DecoderFileError(f"{datamodule.decoder_path} is not the decoder of the training clouds")
    except DecoderFileError as err:  # the checkpoint is still saved, only without what arc.load needs
        warnings.warn(f"the checkpoint holds no inference record (arc.load cannot read it): {err}")
        return None
    canvas, dims = CanvasConfig.parse(datamodule.canvas), int(getattr(datamodule.source, "dims", 2))
    preprocess = {"channels": int(datamodule.source.channels), "dims": dims,
                  "center_crop": datamodule.source_options.get("center_crop"),
                  "canvas": None if canvas is None else asdict(canvas), "image_size": training_size(datamodule.source),
                  "max_pixels": datamodule.source_options.get("max_pixels", DEFAULT_MAX_PIXELS)}
    if dims != 2:
        preprocess["signal"] = signal_settings(datamodule.source)
    record = {
        "format": RECORD_FORMAT,
        "decoder": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()},
        "decoder_header": meta.to_json(),
        "field": _plain(datamodule.field),
        "fit": _plain(datamodule.fit),
        "preprocess": preprocess,
        "class_names": list(module.names()),
    }
    if decoder.latent_start is not None:
        start = decoder.latent_start
        record["latent_start"] = {"weight": start.weight.contiguous(),
                                  "header": latent_start_header(start)}
    return record


@dataclass
class Settings:
    """What a predictor needs besides weights, as JSON values (the settings file of a bundle).

    model: ARCModel arguments (num_classes, latent_dim, backbone {class_path, init_args}, head_hidden,
    normalisation); field, fit: :class:`FieldConfig` / :class:`FitConfig` as dicts; preprocess: how the source
    read images (:mod:`arc.inputs`); evaluation: views, augment, seed
    (:meth:`ARCModel.log_probs`); decoder_hash: the decoder the classifier was trained with.
    """

    model: dict[str, Any]
    field: dict[str, Any]
    fit: dict[str, Any]
    preprocess: dict[str, Any]
    class_names: list[str]
    evaluation: dict[str, Any]
    decoder_hash: str

    @classmethod
    def of_checkpoint(cls, hparams: dict[str, Any], record: dict[str, Any], decoder_hash: str) -> "Settings":
        model = {"num_classes": hparams["num_classes"], "latent_dim": hparams.get("latent_dim", 32),
                 "backbone": hparams.get("backbone"), "head_hidden": list(hparams.get("head_hidden") or []),
                 "normalisation": hparams.get("normalisation", "per_dim")}
        evaluation = {"views": hparams.get("eval_views", 1), "augment": hparams.get("eval_augment"),
                      "seed": hparams.get("seed", 0)}
        return cls(model, dict(record["field"]), dict(record["fit"]), dict(record["preprocess"]),
                   [str(n) for n in record["class_names"]], evaluation, decoder_hash)


@dataclass
class Predictions:
    """Results of :meth:`Predictor.predict`, one entry per input (in input order).

    pred: class name, or None for an input that was skipped; probs: [N, classes] float32 (NaN rows for
    skipped inputs); error: "" or why the input was skipped; converted: inputs converted on reading
    (channels, bit depth, colour model); other_size: inputs whose size differs from the training images'
    (``image_size``), resized to it when ``resized``; fitted / cached: clouds fitted now / read from the cache;
    psnr: each cloud's reconstruction PSNR [dB] on its image (NaN for skipped inputs), a check of the fit.
    """

    class_names: list[str]
    pred: list[Optional[str]]
    probs: Tensor
    error: list[str]
    converted: int = 0
    other_size: int = 0
    resized: bool = False
    fitted: int = 0
    cached: int = 0
    psnr: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pred)


class Predictor:
    """A trained ARC classifier with its decoder and settings; ``predict`` classifies raw images.

    model: the :class:`ARCModel` (eval mode); decoder: its frozen :class:`Decoder`; settings: :class:`Settings`.
    """

    def __init__(self, model: ARCModel, decoder: Decoder, meta: DecoderMeta, settings: Settings,
                 device: torch.device | str | None = None) -> None:
        self.model, self.decoder, self.meta, self.settings = model.eval(), decoder.eval(), meta, settings
        self.field = FieldConfig(**settings.field)
        self.fit = FitConfig(**settings.fit)
        self.class_names = list(settings.class_names)
        self.eval_augment = build_augmentations(settings.evaluation.get("augment"))
        self.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    def to(self, device: torch.device | str) -> "Predictor":
        """Move the model and the decoder to ``device`` (fitting and classification run there)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.decoder.to(self.device)
        return self

    def cache_settings(self, resize: bool = False) -> dict[str, Any]:
        """Everything a fitted cloud depends on besides the image (not ``pixel_budget`` nor ``engine``)."""
        fit = cloud_settings(self.fit, self.decoder, self.field)
        return {"decoder": self.meta.hash, "field": asdict(self.field), "fit": fit,
                "preprocess": self.settings.preprocess, "resize": resize}

    def read(self, item: Input, max_read_pixels: int = MAX_READ_PIXELS,
             resize: bool = False) -> tuple[Tensor, str, bool, bool]:
        """:func:`arc.inputs.read_input` with this model's preprocessing and field."""
        return read_input(item, self.settings.preprocess, self.field, max_read_pixels, resize)

    @torch.no_grad()
    def predict(self, inputs: Input | Sequence[Input], *, batch_size: int = 256,
                cache_dir: str | os.PathLike | None = None, cache: bool = True,
                max_read_pixels: int = MAX_READ_PIXELS, resize: bool = False, progress: bool = False) -> Predictions:
        """Classify image files or tensors ([H, W], [C, H, W], or a [B, C, H, W] batch): read, fit (or take from the
        cache), classify with the evaluation views. A model of D-dimensional samples (D = 1, 3) takes tensors [C, *S]
        (or [*S]), a batch [B, C, *S], and .npy, audio (1-D) or NIfTI (3-D) files (:mod:`arc.signal_inputs`).

        batch_size: images read, fitted and classified together (the evaluation views of an image depend on the
        batch it is in); cache_dir: the cloud cache (default :func:`arc.cache.default_cache_dir`); cache=False
        fits every image anew and stores nothing; max_read_pixels: files with more pixels are skipped unread (images
        above the model's ``max_pixels`` are downscaled, as in training); resize: fit images of another size at the
        training images' size (see :meth:`read`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resize and self.settings.preprocess.get("image_size") is None:
            raise ValueError("resize: the model records no single training image size (mixed sizes, or an older "
                             "checkpoint)")
        dims = int(self.settings.preprocess.get("dims", 2))
        single = isinstance(inputs, (str, os.PathLike)) or (isinstance(inputs, Tensor) and inputs.ndim < dims + 2)
        items = [inputs] if single else list(inputs)  # a [B, C, *S] tensor is B samples
        store = CloudCache((cache_dir or default_cache_dir()) if cache else None)
        steps = self.fit.steps
        bar = tqdm(total=len(items) * steps, desc="predict", unit="img", unit_scale=1 / steps, disable=not progress,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")
        lock = threading.Lock()  # fitting threads report their steps

        def advance(image_steps: int) -> None:
            with lock:
                bar.update(image_steps)

        nan = torch.full((len(items), len(self.class_names)), float("nan"))
        result = Predictions(self.class_names, [None] * len(items), nan, [""] * len(items), resized=resize,
                             psnr=[float("nan")] * len(items))
        for batch_idx, first in enumerate(range(0, len(items), batch_size)):
            chunk = range(first, min(first + batch_size, len(items)))
            clouds = self._clouds(items, chunk, store, result, max_read_pixels, advance)
            if clouds:
                done = sorted(clouds)
                batch = CloudBatch.concat([clouds[i] for i in done]).to(self.device)
                views = int(self.settings.evaluation.get("views", 1))
                seed = int(self.settings.evaluation.get("seed", 0))
                probs = self.model.log_probs(batch, views, self.eval_augment, seed, batch_idx).exp().cpu()
                result.probs[done] = probs
                for i, row in zip(done, probs.argmax(1).tolist()):
                    result.pred[i] = self.class_names[row]
        bar.close()
        return result

    def _clouds(self, items: Sequence[Input], chunk: range, store: CloudCache, result: Predictions,
                max_read_pixels: int, advance: Callable[[int], None]) -> dict[int, CloudBatch]:
        """The clouds (batches of one) of the readable inputs ``chunk``, from the cache or fitted now."""
        clouds: dict[int, CloudBatch] = {}
        todo: dict[int, tuple[Tensor, str, int]] = {}
        for i in chunk:
            try:
                image, content, converted, other_size = self.read(items[i], max_read_pixels, result.resized)
            except ImageReadError as err:
                result.error[i] = skip_reason(err, items[i])
                advance(self.fit.steps)
                continue
            result.converted += converted
            result.other_size += other_size
            key, index = cloud_key(content, self.cache_settings(result.resized)), content_index(content)
            hit = store.get(key, index)
            if hit is None:
                todo[i] = (image, key, index)
                continue
            clouds[i], result.psnr[i] = hit
            result.cached += 1
            advance(self.fit.steps)
        if todo:
            order = list(todo)
            fitted = fit_clouds([todo[i][0] for i in order], self.decoder, self.field, self.fit, "predict",
                                [todo[i][2] for i in order], device=self.device, on_step=advance)
            for j, i in enumerate(order):
                clouds[i], result.psnr[i] = fitted.clouds.cloud(j), float(fitted.psnr[j])
                store.put(todo[i][1], clouds[i], fitted.psnr[j])
            result.fitted += len(order)
        return clouds


def _line(err: Exception) -> str:
    """One line about ``err``: its type and the first line of its message (at most 200 characters)."""
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def build_model(path: Any, settings: Settings, state: dict[str, Tensor] | str) -> ARCModel:
    """The :class:`ARCModel` of ``settings.model`` with the weights ``state`` (a state dict or a safetensors file);
    :class:`ModelFileError` when they do not fit each other."""
    try:
        network = ARCModel(**settings.model)
        if isinstance(state, str):
            load_model(network, state, strict=True)
        else:
            network.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, OSError, SafetensorError) as err:
        raise ModelFileError(f"{path}: the classifier's settings and weights do not fit ({_line(err)})") from err
    return network


def from_checkpoint(path: str | os.PathLike, device: torch.device | str | None = None) -> Predictor:
    """A :class:`Predictor` from a classifier checkpoint with an ``arc_inference`` record (loaded without pickle)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    except Exception as err:  # noqa: BLE001 - any failure means "not a checkpoint"
        raise ModelFileError(f"{path} is neither an arc checkpoint nor a bundle directory ({_line(err)})") from err
    record = checkpoint.get(INFERENCE_KEY)
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ModelFileError(f"{path} holds no inference record (decoder, field and fit settings): it was saved "
                             "before they were stored or without an ARC datamodule; save it again with this version")
    try:
        meta = DecoderMeta.from_json(record["decoder_header"])
        decoder = Decoder(meta.latent_dim, meta.neighbours, meta.channels, meta.offset_scale, meta.dims)
        decoder.load_state_dict(record["decoder"], strict=True)
        start = record.get("latent_start") or {}
        decoder.latent_start = read_latent_start(start.get("weight"), start.get("header"))
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: the decoder in the checkpoint is broken ({_line(err)})") from err
    check_decoder(path, decoder, meta, checkpoint.get("arc_decoder_hash") or meta.hash)
    try:
        settings = Settings.of_checkpoint(hparams, record, meta.hash)
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: the checkpoint lacks the setting {err}") from err
    model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return Predictor(build_model(path, settings, model_state), decoder, meta, settings, device)


def check_decoder(path: Any, decoder: Decoder, meta: DecoderMeta, expected: str) -> None:
    """Raise :class:`ModelFileError` unless ``decoder`` has the hash of its record and the classifier's ``expected``."""
    digest = decoder_hash(decoder)
    if digest != meta.hash or digest != expected:
        raise ModelFileError(f"{path}: the decoder weights (hash {digest[:12]}) do not match the recorded decoder hash "
                             f"{expected[:12]}; the model file was altered or is corrupt")


def load(path: str | os.PathLike, device: torch.device | str | None = None) -> Predictor:
    """A :class:`Predictor` from a checkpoint (``.ckpt``) or a bundle directory (:mod:`arc.bundle`), on ``device``
    (default: CUDA when available). Raises :class:`ModelFileError` with one line for anything else."""
    path = Path(path)
    if path.is_dir():
        from arc.bundle import read_bundle

        return read_bundle(path, device)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist")
    return from_checkpoint(path, device)

