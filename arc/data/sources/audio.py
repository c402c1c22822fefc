"""``audio:PATH`` — PATH/train/<class>/*.wav|flac|ogg (optional val/ and test/), 1-D samples [C, L].

Read with ``soundfile`` (the optional extra ``arc[signals]``); the files' [-1, 1] mapped to [0, 1] ((x + 1) / 2,
so silence is 0.5, the value padding appends).
Every file's header is read when the source opens (frames, channels, rate), so mixed sample rates
are found before any fitting: they need option ``sample_rate`` (each file is then resampled to it,
polyphase, ``scipy.signal.resample_poly``; the first resample is logged). Option ``channels``
(default: the channel count of most train files) mixes stereo to mono or repeats mono (counted,
:class:`arc.data.sources.signal_split.SignalSplit`); ``length`` with ``ragged`` fixes the length
(see :mod:`arc.data.signals`). A file whose header or data cannot be read is a counted skip.

Option ``split_lists: true`` reads the Speech Commands layout instead of train/val/test folders:
PATH/<class>/*.wav, with PATH/validation_list.txt and PATH/testing_list.txt naming the val and test
files (relative paths); every other file is train, and folders starting with "_" (such as
``_background_noise_``) are not classes.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from math import gcd
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from arc.data.images import ImageReadError
from arc.data.sources.imagefolder import open_folders
from arc.data.sources.readers import SIGNAL_OPTIONS, RawSource, SourceError, check_options, positive_int, signals_package
from arc.files import file_list_hash

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def _soundfile():
    return signals_package("soundfile", "audio sources")


class AudioReader:
    """Audio files read on access; ``headers``: (frames, channels, rate) per file, None for an unreadable one."""

    fill = 0.5  # silence, what padding to a fixed length appends

    def __init__(self, files: list[tuple[str, int]]):
        soundfile = _soundfile()
        self.paths = [path for path, _ in files]
        self._labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.headers: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                info = soundfile.info(path)
                self.headers.append((int(info.frames), int(info.channels), int(info.samplerate)))
            except (RuntimeError, OSError, ValueError):  # soundfile.LibsndfileError is a RuntimeError
                self.headers.append(None)
        self.sample_rate: int | None = None  # set by open_audio when files are resampled
        self._resampled = False

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Tensor:
        header = self.headers[i]
        if header is None:
            raise ImageReadError(f"{self.paths[i]}: not a readable audio file")
        try:
            data, rate = _soundfile().read(self.paths[i], dtype="float32", always_2d=True)
        except (RuntimeError, OSError, ValueError) as err:
            raise ImageReadError(f"{self.paths[i]}: unreadable audio ({err})") from err
        data = data.T  # [C, L]
        if self.sample_rate is not None and rate != self.sample_rate:
            step = gcd(int(rate), self.sample_rate)
            from scipy.signal import resample_poly

            # the polyphase filter can overshoot full scale (Gibbs ringing): clip back to the PCM range
            data = np.clip(resample_poly(data, self.sample_rate // step, int(rate) // step, axis=1), -1.0, 1.0).astype(np.float32)
            if not self._resampled:
                log.info("resampling audio from %d Hz to %d Hz (option sample_rate), first %s", rate, self.sample_rate, self.paths[i])
                self._resampled = True
        return torch.from_numpy(np.ascontiguousarray(data)).add_(1.0).mul_(0.5)

    def labels(self) -> Tensor:
        return self._labels

    def describe(self, i: int) -> str:
        return self.paths[i]

    def largest_pixels(self) -> int:
        """The most samples of one channel of a file (after resampling)."""
        lengths = [frames * (self.sample_rate or rate) // rate for frames, _, rate in filter(None, self.headers)]
        return max(lengths, default=0)


def _list_layout(folder: Path, extensions: tuple[str, ...]) -> tuple[dict[str, AudioReader], dict[str, int], list[str]]:
    """Readers of the Speech Commands layout (see the module docstring), class_to_idx and all files."""
    lists = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        if not (folder / name).is_file():
            raise SourceError(f"{folder}: option split_lists needs {name} (the Speech Commands layout)")
        lists[split] = {line.strip() for line in (folder / name).read_text().splitlines() if line.strip()}
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("_"))
    if not classes:
        raise SourceError(f"{folder}: no class sub-folders")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for name in classes:
        for path in sorted((folder / name).iterdir()):
            if path.name.lower().endswith(extensions):
                relative = f"{name}/{path.name}"
                split = "val" if relative in lists["val"] else "test" if relative in lists["test"] else "train"
                files[split].append((str(path), class_to_idx[name]))
    if not files["train"]:
        raise SourceError(f"{folder}: no audio files with extensions {extensions} outside the val and test lists")
    readers = {split: AudioReader(pairs) for split, pairs in files.items() if pairs}
    return readers, class_to_idx, [path for pairs in files.values() for path, _ in pairs]


def open_audio(spec: str, arg: str, *, root: Path, download: bool, seed: int, options: dict) -> RawSource:
    """The folder ``arg`` of audio files per class; options ``sample_rate``, ``extensions``, ``split_lists``,
    ``channels``, ``length``, ``ragged``; content hash: the (relative path, size) list of the files."""
    check_options(spec, options, {"sample_rate", "extensions", "split_lists"} | SIGNAL_OPTIONS)
    folder = Path(arg)
    extensions = tuple(ext.lower() for ext in options.get("extensions", AUDIO_EXTENSIONS))
    if options.get("split_lists", False):
        if not folder.is_dir():
            raise SourceError(f"{folder}: not a folder")
        readers, class_to_idx, every = _list_layout(folder, extensions)
    else:
        readers, class_to_idx, every = open_folders(folder, None, extensions, reader=AudioReader)
    headers = [header for reader in readers.values() for header in reader.headers if header is not None]
    if not headers:
        raise SourceError(f"{folder}: none of the {len(every)} files is readable audio")
    rates = sorted({rate for _, _, rate in headers})
    if "sample_rate" in options:
        rate = positive_int(spec, "sample_rate", options["sample_rate"])
        for reader in readers.values():
            reader.sample_rate = rate
    elif len(rates) > 1:
        raise SourceError(f"{folder}: the files have sample rates {rates} Hz; set option sample_rate to resample them to one")
    votes = Counter(channels for _, channels, _ in filter(None, readers["train"].headers))
    native = votes.most_common(1)[0][0] if votes else 1
    return RawSource(readers, list(class_to_idx), native, folder.resolve().name, file_list_hash(folder, every), dims=1)
