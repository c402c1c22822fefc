"""The bad-input and shape rules of 1-D and 3-D samples (signals [C, L], volumes [C, D, H, W]).

Images keep their own rules (:mod:`arc.data.images`: values in [0, 1], 1 or 3 channels). A signal's
values are taken as the source gives them (audio in [-1, 1], sensor units, scanner intensities):
the field standardises each sample per channel (``field.colour: standardise``), so only finiteness
is required. The rules:

- NaN/inf, or an axis shorter than 2 samples, raises :class:`ImageReadError` (a counted skip);
- a sample with another channel count is converted when that has one meaning (several channels
  -> 1 by their mean, e.g. stereo -> mono; 1 -> C by repeating) and counted, otherwise skipped;
- samples of another length or shape than the source's ``length`` / ``shape`` option are padded
  (zeros at the end of each axis), cropped (centred), resampled (linear / trilinear) or refused
  (a counted skip), as option ``ragged`` says.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from arc.data.images import ImageReadError

RAGGED_MODES = ("pad", "crop", "resample", "refuse")
MIN_LENGTH = 2


def check_signal(sample: Tensor, what: str, dims: int) -> Tensor:
    """Raise :class:`ImageReadError` unless ``sample`` is a finite float [C, *S] with D = ``dims`` axes of >= 2 samples."""
    if sample.ndim != dims + 1:
        raise ImageReadError(f"{what}: expected a {dims}-D sample with a channel axis, got shape {tuple(sample.shape)}")
    if min(sample.shape[1:]) < MIN_LENGTH:
        raise ImageReadError(f"{what}: shape {tuple(sample.shape[1:])} has an axis shorter than {MIN_LENGTH} samples")
    if not bool(torch.isfinite(sample).all()):
        raise ImageReadError(f"{what}: the sample contains NaN or inf")
    return sample.float()


def conform_signal_channels(sample: Tensor, channels: int, what: str) -> tuple[Tensor, bool]:
    """``sample`` [c, *S] with ``channels`` channels: several -> 1 by their mean, 1 -> C by repeating.
    Returns (sample, converted); any other mismatch raises :class:`ImageReadError`."""
    have = sample.shape[0]
    if have == channels:
        return sample, False
    if channels == 1:
        return sample.mean(dim=0, keepdim=True), True
    if have == 1:
        return sample.expand(channels, *sample.shape[1:]).contiguous(), True
    raise ImageReadError(f"{what}: has {have} channels, the source has {channels} (only mixing to 1 or repeating 1 is defined)")


def fit_shape(sample: Tensor, shape: tuple[int, ...], mode: str, what: str) -> tuple[Tensor, bool]:
    """``sample`` [C, *S] brought to spatial ``shape`` by ``mode`` (see :data:`RAGGED_MODES`).
    Returns (sample, changed); ``refuse`` raises :class:`ImageReadError` for another shape."""
    have = tuple(sample.shape[1:])
    if have == tuple(shape):
        return sample, False
    if mode == "refuse":
        raise ImageReadError(f"{what}: shape {have} differs from the source's {tuple(shape)} (option ragged: refuse)")
    if mode == "resample":
        interpolation = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
        return F.interpolate(sample[None], size=tuple(shape), mode=interpolation, align_corners=False)[0], True
    if mode == "crop" and any(h < s for h, s in zip(have, shape)):
        raise ImageReadError(f"{what}: shape {have} is smaller than the source's {tuple(shape)} (option ragged: crop)")
    out = sample
    for axis, (h, s) in enumerate(zip(have, shape), start=1):
        if h > s:  # crop the centre (pad mode crops too: a fixed shape is what it promises)
            out = out.narrow(axis, (h - s) // 2, s)
        elif h < s:
            pad = [0, 0] * (out.ndim - 1 - axis) + [0, s - h]  # F.pad lists the last axis first
            out = F.pad(out, pad)
    return out.contiguous(), True
