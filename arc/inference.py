"""Classify raw images with a trained model: everything inference needs, the :class:`Predictor`, and ``arc.load``.

A checkpoint carries, beside the classifier's weights and hyperparameters (model, evaluation views,
class names), an ``arc_inference`` record written by :func:`inference_record` at save time: the
decoder's weights and record, the field and fit settings and the preprocessing of the source
(channels, centre crop, canvas). A bundle (:mod:`arc.bundle`) holds the same as safetensors + JSON.

``Predictor.predict`` reads each image as the sources do (:mod:`arc.data.images`), fits its cloud with
the model's own decoder and settings (:func:`arc.field.fit_clouds`, batched, on the predictor's
device) unless the cloud cache (:mod:`arc.cache`) holds it, and classifies the clouds. An image's
fitting seed is derived from the hash of its pixels, so its cloud does not depend on the other
images of a call, nor on whether it came as a file or a tensor.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import Tensor
from tqdm.auto import tqdm

from arc.augment import build_augmentations
from arc.cache import CloudCache, cloud_key, default_cache_dir
from arc.cloud import CloudBatch
from arc.data.canvas import CanvasConfig, CanvasError, apply_canvas
from arc.data.images import ImageReadError, check_source_image, conform_channels, read_image_file
from arc.field.config import FieldConfig, FitConfig
from arc.field.decoder import Decoder, DecoderMeta, decoder_hash, load_decoder
from arc.field.errors import DecoderFileError, FieldInputError
from arc.field.fitting import fit_clouds
from arc.field.sampling import latent_count
from arc.model import ARCModel

__all__ = ["INFERENCE_KEY", "ModelFileError", "Predictions", "Predictor", "Settings", "build_model", "check_decoder",
           "content_index", "from_checkpoint", "inference_record", "load"]

INFERENCE_KEY = "arc_inference"
RECORD_FORMAT = "arc-inference/1"
MAX_PIXELS = 4096 * 4096
"""Default largest image (H * W pixels) :meth:`Predictor.predict` fits; larger files get an error row."""
NATIVE_MODES = ("1", "L", "LA", "RGB", "RGBA")  # PIL modes read without a conversion
Input = Union[str, os.PathLike, Tensor]


class ModelFileError(ValueError):
    """A model file that is neither an arc checkpoint nor a bundle, or whose parts do not agree."""


def _plain(value: Any) -> dict[str, Any]:
    return asdict(value) if is_dataclass(value) else dict(value)


def inference_record(module: Any) -> Optional[dict[str, Any]]:
    """The ``arc_inference`` checkpoint entry of a classifier module from its trainer's datamodule, or None
    when there is none to read (no datamodule with a source, field, fit and decoder).

    Holds: ``format``, ``decoder`` (state dict, float32 CPU), ``decoder_header`` (:meth:`DecoderMeta.to_json`),
    ``field`` / ``fit`` (dicts), ``preprocess`` (channels, center_crop, canvas) and ``class_names``.
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
    canvas = CanvasConfig.parse(datamodule.canvas)
    return {
        "format": RECORD_FORMAT,
        "decoder": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in decoder.state_dict().items()},
        "decoder_header": meta.to_json(),
        "field": _plain(datamodule.field),
        "fit": _plain(datamodule.fit),
        "preprocess": {"channels": int(datamodule.source.channels),
                       "center_crop": datamodule.source_options.get("center_crop"),
                       "canvas": None if canvas is None else asdict(canvas),
                       "image_size": training_size(datamodule.source)},
        "class_names": list(module.names()),
    }


def training_size(source: Any, samples: int = 16) -> Optional[list[int]]:
    """[H, W] of the train images of ``source`` before its canvas (after its crop), when the first ``samples``
    readable ones agree; None for mixed sizes."""
    split = source.split("train")
    sizes = set()
    for i in range(min(samples, len(split))):
        try:
            sizes.add(tuple(split.reader.read(i).shape[1:]) if split.center_crop is None else (split.center_crop,) * 2)
        except ImageReadError:
            continue
    return list(sizes.pop()) if len(sizes) == 1 else None


@dataclass
class Settings:
    """What a predictor needs besides weights, as JSON values (the settings file of a bundle).

    model: ARCModel arguments (num_classes, latent_dim, backbone {class_path, init_args}, head_hidden,
    normalisation); field, fit: :class:`FieldConfig` / :class:`FitConfig` as dicts; preprocess: channels
    (1 or 3), center_crop (int or None), canvas (dict or None), image_size ([H, W] of the training images before
    the canvas, or None); evaluation: views, augment, seed
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
        self.canvas = CanvasConfig.parse(settings.preprocess.get("canvas"))
        self.to(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    def to(self, device: torch.device | str) -> "Predictor":
        """Move the model and the decoder to ``device`` (fitting and classification run there)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.decoder.to(self.device)
        return self

    def cache_settings(self, resize: bool = False) -> dict[str, Any]:
        """Everything a fitted cloud depends on besides the image (``pixel_budget`` only bounds memory)."""
        fit = {k: v for k, v in asdict(self.fit).items() if k != "pixel_budget"}
        return {"decoder": self.meta.hash, "field": asdict(self.field), "fit": fit,
                "preprocess": self.settings.preprocess, "resize": resize}

    def read(self, item: Input, max_pixels: int = MAX_PIXELS, resize: bool = False) -> tuple[Tensor, str, bool, bool]:
        """(image [C, H, W] in [0, 1] as the model's source prepares it, content hash, converted, other size) of a
        file or a tensor ([H, W] or [C, H, W], float in [0, 1] or uint8). Raises :class:`ImageReadError` (a skip).

        An image of another size than the training images (``image_size``) is fitted at its own size, or resized
        to theirs (bilinear, antialiased, as the digits source resizes) with ``resize``.

        The content hash is that of the pixels in the model's channels (before crop and canvas), so a file and
        the tensor of its pixels are one image: same cloud, same cache entry.
        """
        converted = False
        if isinstance(item, Tensor):
            image = item.detach().cpu()
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            image = image[None] if image.ndim == 2 else image
            what = f"tensor {tuple(item.shape)}"
            if image.ndim != 3 or not 1 <= image.shape[0] <= 4:
                raise ImageReadError(f"{what}: expected [H, W] or [C, H, W] with C in 1..4")
        else:
            what = str(item)
            if not os.path.isfile(what):
                raise ImageReadError(f"{what}: not a file")
            if os.path.getsize(what) == 0:
                raise ImageReadError(f"{what}: empty file")
            try:
                with Image.open(what) as header:
                    (width, height), mode = header.size, header.mode
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise ImageReadError(f"{what}: unreadable image ({err})") from err
            if width * height > max_pixels:
                raise ImageReadError(f"{what}: {width}x{height} is larger than max_pixels={max_pixels}")
            converted, image = mode not in NATIVE_MODES, read_image_file(what)
        image, channels_converted = conform_channels(image, int(self.settings.preprocess["channels"]))
        image = check_source_image(image, what).contiguous()
        content = hashlib.sha256(repr(tuple(image.shape)).encode() + image.numpy().tobytes()).hexdigest()
        size = self.settings.preprocess.get("image_size")
        other_size = size is not None and list(image.shape[1:]) != list(size)
        if other_size and resize:
            image = F.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
            image = image[0].clamp_(0.0, 1.0)
        crop = self.settings.preprocess.get("center_crop")
        if crop is not None:
            if min(image.shape[1:]) < crop:
                raise ImageReadError(f"{what}: image {tuple(image.shape[1:])} is smaller than the model's "
                                     f"center_crop {crop}")
            top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
            image = image[:, top:top + crop, left:left + crop]
        if self.canvas is not None:
            try:
                image = apply_canvas(image, self.canvas, "predict", content_index(content))
            except CanvasError as err:
                raise ImageReadError(f"{what}: image {tuple(image.shape[1:])} does not fit the model's canvas") from err
        try:
            latent_count(image.shape[1], image.shape[2], 0, self.field)
        except FieldInputError as err:
            raise ImageReadError(f"{what}: too small for the field ({err})") from err
        return image, content, converted or channels_converted, other_size

    @torch.no_grad()
    def predict(self, inputs: Input | Sequence[Input], *, batch_size: int = 256,
                cache_dir: str | os.PathLike | None = None, cache: bool = True, max_pixels: int = MAX_PIXELS,
                resize: bool = False, progress: bool = False) -> Predictions:
        """Classify image files or tensors ([H, W], [C, H, W], or a [B, C, H, W] batch): read, fit (or take from the
        cache), classify with the evaluation views.

        batch_size: images read, fitted and classified together (the evaluation views of an image depend on the
        batch it is in); cache_dir: the cloud cache (default :func:`arc.cache.default_cache_dir`); cache=False
        fits every image anew and stores nothing; max_pixels: larger files are skipped unread; resize: fit images of
        another size at the training images' size (see :meth:`read`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resize and self.settings.preprocess.get("image_size") is None:
            raise ValueError("resize: the model records no single training image size (mixed sizes, or an older "
                             "checkpoint)")
        single = isinstance(inputs, (str, os.PathLike)) or (isinstance(inputs, Tensor) and inputs.ndim < 4)
        items = [inputs] if single else list(inputs)  # a [B, C, H, W] tensor is B images
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
            clouds = self._clouds(items, chunk, store, result, max_pixels, advance)
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

    def _clouds(self, items: Sequence[Input], chunk: range, store: CloudCache, result: Predictions, max_pixels: int,
                advance: Callable[[int], None]) -> dict[int, CloudBatch]:
        """The clouds (batches of one) of the readable inputs ``chunk``, from the cache or fitted now."""
        clouds: dict[int, CloudBatch] = {}
        todo: dict[int, tuple[Tensor, str, int]] = {}
        for i in chunk:
            try:
                image, content, converted, other_size = self.read(items[i], max_pixels, result.resized)
            except ImageReadError as err:
                result.error[i] = _reason(err, items[i])
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


def content_index(content: str) -> int:
    """The image "index" (fitting seed, canvas draw) of an input with hex content hash ``content``: 60 bits of it."""
    return int(content[:15], 16)


def _reason(err: Exception, item: Input) -> str:
    """The message of a skip without the leading "<path>: " (the CSV names the file)."""
    text, prefix = str(err), f"{item}: "
    return text[len(prefix):] if isinstance(item, (str, os.PathLike)) and text.startswith(prefix) else text


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
        decoder = Decoder(meta.latent_dim, meta.neighbours, meta.channels, meta.offset_scale)
        decoder.load_state_dict(record["decoder"], strict=True)
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

