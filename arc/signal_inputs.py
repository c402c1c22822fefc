"""New 1-D and 3-D samples read as a model's training source read its samples (the D ≠ 2 half of :mod:`arc.inputs`).

A model trained on signals [C, L] or volumes [C, D, H, W] records in its ``preprocess`` settings
(:mod:`arc.inference`) ``dims`` (D), ``channels``, ``image_size`` (the source's fixed shape S, or None
when samples kept their own shapes) and ``signal``: what its source's reader did to a file
(:func:`signal_settings`): ``kind`` (the source kind), ``ragged`` and ``fill`` (how a sample reaches S),
and by kind ``value_range`` (an npz read with ``scale: train_range``: the train minimum and maximum),
``sample_rate`` (audio, Hz) or ``orientation`` / ``reorient`` / ``spacing`` / ``resample`` /
``intensity`` (NIfTI).

:func:`read_signal` reads a tensor [C, *S] (or [*S], one channel), a ``.npy`` array, an audio file
(1-D models) or a NIfTI volume (3-D models) with the sources' own readers
(:class:`~arc.data.sources.readers.SignalArrayReader`, :class:`~arc.data.sources.audio.AudioReader`,
:class:`~arc.data.sources.nifti.NiftiReader`, set up as at training) and applies the sources' rules
(:mod:`arc.data.signals`: check, channels, shape) in the order :class:`~arc.data.sources.SignalSplit`
does. Tensors and arrays are read as an npz array of the model's source is (uint8 / uint16 scaled,
floats in [0, 1] or mapped by the recorded train range). A sample's content hash is the sha256 of
the sample it fits (after channels and shape).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from arc.data.images import ImageReadError
from arc.data.signals import check_signal, conform_signal_channels, fit_shape
from arc.data.sources.audio import AUDIO_EXTENSIONS, AudioReader
from arc.data.sources.nifti import NIFTI_EXTENSIONS, NiftiReader
from arc.data.sources.readers import Reader, SignalArrayReader, Subset
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError
from arc.field.sampling import sample_latent_count

__all__ = ["SAMPLE_SHAPES", "input_extensions", "read_signal", "signal_settings"]

SAMPLE_SHAPES = {1: "[C, L] (or [L])", 2: "[C, H, W] (or [H, W])", 3: "[C, D, H, W] (or [D, H, W])"}
ARRAY_EXTENSIONS = (".npy",)
FILE_EXTENSIONS = {1: ARRAY_EXTENSIONS + AUDIO_EXTENSIONS, 3: ARRAY_EXTENSIONS + NIFTI_EXTENSIONS}


def input_extensions(dims: int) -> tuple[str, ...]:
    """The file extensions a model of ``dims``-D samples reads (.npy, and audio for 1-D or NIfTI for 3-D)."""
    return FILE_EXTENSIONS[dims]


def signal_settings(source: Any) -> dict[str, Any]:
    """What the train reader of the 1-D / 3-D ``source`` did to a file, as JSON values (see the module docstring)."""
    split = source.split("train")
    reader = split.reader
    while isinstance(reader, Subset):
        reader = reader.reader
    settings: dict[str, Any] = {"kind": str(source.identity["source"]), "ragged": split.ragged,
                                "fill": float(getattr(reader, "fill", 0.0))}
    if isinstance(reader, SignalArrayReader) and reader.value_range is not None:
        settings["value_range"] = [float(v) for v in reader.value_range]
    if isinstance(reader, AudioReader):
        rates = sorted({rate for _, _, rate in filter(None, reader.headers)})
        settings["sample_rate"] = reader.sample_rate or (rates[0] if rates else None)
    if isinstance(reader, NiftiReader):
        settings.update(orientation=reader.orientation, reorient=reader.reorient, resample=reader.resample,
                        spacing=None if reader.spacing is None else list(reader.spacing), intensity=reader.intensity)
    return settings


def _array_reader(array: np.ndarray, what: str, dims: int, settings: Mapping[str, Any]) -> SignalArrayReader:
    """A one-sample :class:`SignalArrayReader` of ``array`` [C, *S] or [*S]; a wrong D or dtype is an ImageReadError."""
    if array.ndim not in (dims, dims + 1):
        raise ImageReadError(f"{what}: the model takes {dims}-D samples {SAMPLE_SHAPES[dims]}, got shape "
                             f"{tuple(array.shape)}")
    if not (array.dtype in (np.uint8, np.uint16) or np.issubdtype(array.dtype, np.floating)):
        raise ImageReadError(f"{what}: dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    value_range = settings.get("value_range")
    reader = SignalArrayReader(array[None], np.zeros(1, np.int64), what, dims,
                               None if value_range is None else tuple(value_range))
    reader.fill = float(settings.get("fill", 0.0))  # the model's padding value (audio silence: 0.5)
    return reader


def _file_reader(path: str, dims: int, settings: Mapping[str, Any]) -> Reader:
    """The source reader of one file ``path``, set up as the model's source was."""
    name = path.lower()
    if name.endswith(ARRAY_EXTENSIONS):
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ImageReadError(f"{path}: not a readable .npy array ({err})") from err
        return _array_reader(array, path, dims, settings)
    if dims == 1 and name.endswith(AUDIO_EXTENSIONS):
        reader = AudioReader([(path, 0)])
        reader.sample_rate = settings.get("sample_rate")  # resampled to the training rate
        return reader
    if dims == 3 and name.endswith(NIFTI_EXTENSIONS):
        reader = NiftiReader([(path, 0)])
        own = reader.headers[0] or (None, None, None)  # a model not trained on NIfTI takes a volume as it is
        reader.orientation, reader.spacing = settings.get("orientation") or own[0], settings.get("spacing") or own[1]
        reader.reorient, reader.resample = bool(settings.get("reorient")), bool(settings.get("resample"))
        reader.intensity = settings.get("intensity", "minmax")
        return reader
    raise ImageReadError(f"{path}: the model takes {dims}-D samples: a tensor {SAMPLE_SHAPES[dims]} or a file "
                         f"{', '.join(FILE_EXTENSIONS[dims])}")


def read_signal(item: str | os.PathLike | Tensor, preprocess: Mapping[str, Any], field: FieldConfig,
                max_read_pixels: int) -> tuple[Tensor, str, bool, bool]:
    """(sample [C, *S] in [0, 1] ready to fit, content hash, converted, other shape) of a tensor or a file, read as the
    model's source read its samples. Raises :class:`ImageReadError` (a skip).

    converted: channels mixed or repeated to the model's; other shape: brought to ``image_size`` by the source's
    ``ragged`` rule. max_read_pixels: a sample of more points (ΠS, from the file header where there is one) is a skip.
    """
    dims, settings = int(preprocess["dims"]), preprocess.get("signal") or {}
    if isinstance(item, Tensor):
        what = f"tensor {tuple(item.shape)}"
        tensor = item.detach().cpu()
        reader = _array_reader((tensor if tensor.dtype == torch.uint8 else tensor.float()).numpy(), what, dims, settings)
    else:
        what = str(item)
        if not os.path.isfile(what):
            raise ImageReadError(f"{what}: not a file")
        if os.path.getsize(what) == 0:
            raise ImageReadError(f"{what}: empty file")
        reader = _file_reader(what, dims, settings)
    if (reader.largest_pixels() or 0) > max_read_pixels:
        raise ImageReadError(f"{what}: {reader.largest_pixels()} points is more than max_read_pixels={max_read_pixels}")
    sample = check_signal(reader.read(0), what, dims)
    sample, converted = conform_signal_channels(sample, int(preprocess["channels"]), what)
    shape, other_shape = preprocess.get("image_size"), False
    if shape is not None:
        sample, other_shape = fit_shape(sample, tuple(shape), settings.get("ragged", "pad"), what,
                                        float(settings.get("fill", 0.0)))
    sample = sample.contiguous()
    try:
        sample_latent_count(tuple(sample.shape[1:]), 0, field)
    except FieldInputError as err:
        raise ImageReadError(f"{what}: too small for the field ({err})") from err
    content = hashlib.sha256(repr(tuple(sample.shape)).encode() + sample.numpy().tobytes()).hexdigest()
    return sample, content, converted, other_shape
