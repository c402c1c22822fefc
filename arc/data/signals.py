"""The bad-input and shape rules of 1-D and 3-D samples (signals [C, L], volumes [C, D, H, W]).

Samples are in [0, 1] like images (the fitting PSNR has data range 1), with any channel count; each
source maps its values there (audio [-1, 1] -> [0, 1], NIfTI by each volume's range, an npz of raw
values by its train range with option ``scale: train_range``). The rules:

- NaN/inf, values outside [0, 1], or an axis shorter than 2 samples raise :class:`ImageReadError`
  (a counted skip);
- a sample with another channel count is converted when that has one meaning (several channels
  -> 1 by their mean, e.g. stereo -> mono; 1 -> C by repeating) and counted, otherwise skipped;
- samples of another length or shape than the source's ``length`` / ``shape`` option are padded
  (with the source's fill value, e.g. 0.5 for audio silence, at the end of each axis), cropped
  (centred), resampled (linear / trilinear) or refused
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
    low, high = float(sample.min()), float(sample.max())
    if low < 0.0 or high > 1.0:
        raise ImageReadError(f"{what}: values span [{low:g}, {high:g}], outside [0, 1] (an npz of raw values takes "
                             "option scale: train_range)")
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


def fit_shape(sample: Tensor, shape: tuple[int, ...], mode: str, what: str, fill: float = 0.0) -> tuple[Tensor, bool]:
    """``sample`` [C, *S] brought to spatial ``shape`` by ``mode`` (see :data:`RAGGED_MODES`; "pad" appends ``fill``).
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
            out = F.pad(out, pad, value=fill)
    return out.contiguous(), True
