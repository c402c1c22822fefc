"""``nifti:PATH`` — PATH/train/<class>/*.nii|*.nii.gz (optional val/ and test/), 3-D samples [C, X, Y, Z].

Read with ``nibabel`` (the optional extra ``arc[signals]``); a 4-D volume's last axis is its channels.
Every header is read when the source opens. Volumes must share an orientation (axis codes of the
affine, e.g. RAS) and a voxel spacing (mm):

- option ``orientation`` (e.g. "RAS") reorients every volume to it; without it, a volume whose
  orientation differs from most train volumes' is refused (a counted skip, said once);
- option ``spacing`` ([sx, sy, sz] mm) resamples every volume to it (trilinear); without it, a
  volume whose spacing differs (by more than 1e-3 relative) from most train volumes' is refused.

Option ``intensity``: "minmax" (default) maps each volume to [0, 1] by its own range (scanner
units differ between sessions), "raw" keeps the values. ``shape`` with ``ragged`` fixes the shape.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arc.data.images import ImageReadError
from arc.data.sources.imagefolder import open_folders
from arc.data.sources.readers import SIGNAL_OPTIONS, RawSource, SourceError, check_options, signals_package
from arc.files import file_list_hash

log = logging.getLogger(__name__)
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
INTENSITY = ("minmax", "raw")


def _nibabel():
    return signals_package("nibabel", "NIfTI sources")


class NiftiReader:
    """NIfTI volumes read on access; ``headers``: (axis codes, spacing, shape) per file, None when unreadable."""

    def __init__(self, files: list[tuple[str, int]]):
        nibabel = _nibabel()
        self.paths = [path for path, _ in files]
        self._labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.headers: list[tuple[str, tuple[float, ...], tuple[int, ...]] | None] = []
        for path in self.paths:
            try:
                image = nibabel.load(path)
                codes = "".join(nibabel.aff2axcodes(image.affine))
                self.headers.append((codes, tuple(round(float(z), 6) for z in image.header.get_zooms()[:3]), tuple(image.shape)))
            except (OSError, ValueError, nibabel.filebasedimages.ImageFileError):
                self.headers.append(None)
        self.orientation: str | None = None  # the target orientation (reorient) or the expected one (refuse)
        self.reorient = False
        self.spacing: tuple[float, ...] | None = None
        self.resample = False
        self.intensity = "minmax"
        self._said: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def _once(self, key: str, message: str) -> None:
        if key not in self._said:
            log.warning(message)
            self._said.add(key)

    def read(self, i: int) -> Tensor:
        nibabel, header, path = _nibabel(), self.headers[i], self.paths[i]
        if header is None:
            raise ImageReadError(f"{path}: not a readable NIfTI volume")
        codes, spacing, shape = header
        if len(shape) not in (3, 4):
            raise ImageReadError(f"{path}: a volume must be 3-D (or 4-D with channels last), got shape {shape}")
        image = nibabel.load(path)
        if codes != self.orientation:
            if not self.reorient:
                self._once("orientation", f"volumes oriented other than {self.orientation} are skipped, first {path} ({codes}); "
                                          "set option orientation to reorient them")
                raise ImageReadError(f"{path}: orientation {codes}, not {self.orientation}")
            transform = nibabel.orientations.ornt_transform(nibabel.io_orientation(image.affine),
                                                            nibabel.orientations.axcodes2ornt(tuple(self.orientation)))
            image = image.as_reoriented(transform)
            spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
        try:
            data = np.ascontiguousarray(image.get_fdata(dtype=np.float32))
        except (OSError, ValueError, EOFError) as err:
            raise ImageReadError(f"{path}: unreadable volume data ({err})") from err
        volume = torch.from_numpy(data[..., None] if data.ndim == 3 else data).permute(3, 0, 1, 2).contiguous()
        if not np.allclose(spacing, self.spacing, rtol=1e-3):
            if not self.resample:
                self._once("spacing", f"volumes with a spacing other than {self.spacing} mm are skipped, first {path} "
                                      f"({spacing}); set option spacing to resample them")
                raise ImageReadError(f"{path}: spacing {spacing} mm, not {self.spacing}")
            size = [max(2, round(n * s / t)) for n, s, t in zip(volume.shape[1:], spacing, self.spacing)]
            volume = F.interpolate(volume[None], size=size, mode="trilinear", align_corners=False)[0]
        if self.intensity == "minmax" and bool(torch.isfinite(volume).all()):
            low, high = volume.amin(), volume.amax()
            volume = (volume - low) / (high - low).clamp_min(1e-12)
        return volume

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.paths[i]

    def largest_pixels(self) -> int:
        return max((int(np.prod(shape[:3])) for _, _, shape in filter(None, self.headers)), default=0)


def _axis_codes(codes: object) -> bool:
    """Whether ``codes`` names one of L/R, one of A/P and one of S/I, in any order (e.g. "RAS", "PSL")."""
    if not isinstance(codes, str) or len(codes) != 3:
        return False
    return sorted(pair for c in codes.upper() for pair in ("LR", "AP", "SI") if c in pair) == ["AP", "LR", "SI"]


def _most_common(values: list) -> object:
    return Counter(values).most_common(1)[0][0]


def open_nifti(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """The folder ``arg`` of NIfTI volumes per class; options ``orientation``, ``spacing``, ``intensity``,
    ``channels``, ``shape``, ``ragged``; content hash: the (relative path, size) list of the files."""
    check_options(spec, options, {"orientation", "spacing", "intensity", "extensions"} | SIGNAL_OPTIONS)
    folder = Path(arg)
    extensions = tuple(ext.lower() for ext in options.get("extensions", NIFTI_EXTENSIONS))
    readers, class_to_idx, every = open_folders(folder, None, extensions, reader=NiftiReader)
    train = [header for header in readers["train"].headers if header is not None]
    if not train:
        raise SourceError(f"{folder}/train: none of the files is a readable NIfTI volume")
    intensity = options.get("intensity", "minmax")
    if intensity not in INTENSITY:
        raise SourceError(f"{spec}: option intensity must be one of {INTENSITY}, got {intensity!r}")
    orientation = options.get("orientation")
    if orientation is not None and not _axis_codes(orientation):
        raise SourceError(f"{spec}: option orientation must be three axis codes such as 'RAS' or 'LPS', got {orientation!r}")
    spacing = options.get("spacing")
    if spacing is not None and (not isinstance(spacing, (list, tuple)) or len(spacing) != 3
                                or not all(isinstance(s, (int, float)) and s > 0 for s in spacing)):
        raise SourceError(f"{spec}: option spacing must be three positive numbers (mm), got {spacing!r}")
    for reader in readers.values():
        reader.orientation = orientation.upper() if orientation else _most_common([codes for codes, _, _ in train])
        reader.reorient = orientation is not None
        reader.spacing = tuple(float(s) for s in spacing) if spacing else _most_common([zooms for _, zooms, _ in train])
        reader.resample = spacing is not None
        reader.intensity = intensity
    native = _most_common([shape[3] if len(shape) == 4 else 1 for _, _, shape in train])
    return RawSource(readers, list(class_to_idx), int(native), folder.resolve().name, file_list_hash(folder, every), dims=3)
