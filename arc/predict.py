"""``arc predict`` and ``tools/predict.py``: classify image (or signal, volume) files with a model, write a CSV.

    python tools/predict.py --model CKPT_OR_BUNDLE --input DIR_OR_FILES... --out FILE.csv \\
        [--batch-size 256] [--device cuda|cpu] [--cache-dir DIR | --no-cache] [--max-read-pixels N] [--resize]

Folders are searched recursively for image files (by extension, as the imagefolder source does; a
model of 1-D samples takes .npy and audio files, one of 3-D samples .npy and NIfTI files);
files named on the command line are always read. One row per file: ``path``, ``pred`` (class name),
``prob_<class>`` for every class, ``error`` (empty, or why the file was skipped: unreadable, empty,
too small, too large, ...). Skipped files never stop the run; a model file that cannot be loaded ends it
with one line (exit 2).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Sequence

from arc.data.sources.imagefolder import IMAGE_EXTENSIONS
from arc.files import atomic_write
from arc.inference import MAX_READ_PIXELS, ModelFileError, Predictions, load
from arc.signal_inputs import input_extensions

__all__ = ["collect_inputs", "main", "write_csv"]


def collect_inputs(inputs: Sequence[str | os.PathLike],
                   extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[list[Path], int]:
    """(the files to classify: named files as given, files of ``extensions`` under named folders sorted, the
    number of other files left out of those folders). A name that does not exist is kept (it gets an error row)."""
    files, ignored = [], 0
    for item in map(Path, inputs):
        if not item.is_dir():
            files.append(item)
            continue
        for dirpath, dirnames, names in os.walk(item, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if name.lower().endswith(extensions):
                    files.append(Path(dirpath) / name)
                else:
                    ignored += 1
    return files, ignored


def write_csv(path: str | os.PathLike, files: Sequence[Path], result: Predictions) -> None:
    """Write ``path`` (atomically): path, pred, prob_<class> per class (6 decimals), error; one row per file."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "pred", *[f"prob_{name}" for name in result.class_names], "error"])
            for i, file in enumerate(files):
                probs = [f"{p:.6f}" for p in result.probs[i].tolist()] if not result.error[i] else []
                probs += [""] * (len(result.class_names) - len(probs))
                writer.writerow([str(file), result.pred[i] or "", *probs, result.error[i]])

    atomic_write(Path(path), write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arc predict", description="Classify image files with a trained arc model "
                                "(a checkpoint or a bundle from `arc export`); write one CSV row per file.")
    p.add_argument("--model", required=True, help="a classifier checkpoint (.ckpt) or a bundle directory")
    p.add_argument("--input", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--batch-size", type=int, default=256, help="images fitted and classified together (default 256)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cache-dir", default=None, help="cache of fitted clouds (default: $ARC_CACHE or ~/.cache/arc)")
    p.add_argument("--no-cache", action="store_true", help="fit every image anew and cache nothing")
    p.add_argument("--max-read-pixels", type=int, default=MAX_READ_PIXELS, help="skip files of more pixels, unread "
                   f"(default {MAX_READ_PIXELS}; images above the model's max_pixels are downscaled, as in training)")
    p.add_argument("--resize", action="store_true", help="fit images whose size differs from the training images' "
                   "at that size (default: at their own size)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); 0 on success (skipped files included), 2 when
    the model or the inputs are unusable."""
    args = parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        predictor = load(args.model, args.device)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dims = int(predictor.settings.preprocess.get("dims", 2))
    extensions = IMAGE_EXTENSIONS if dims == 2 else input_extensions(dims)
    files, ignored = collect_inputs(args.input, extensions)
    if not files:
        print(f"error: no input files in {' '.join(args.input)} (extensions {', '.join(extensions)})", file=sys.stderr)
        return 2
    if args.resize and dims != 2:
        print(f"error: --resize is for image models; this {dims}-D model brings samples to its shape as its source "
              "did (option ragged)", file=sys.stderr)
        return 2
    if args.resize and predictor.settings.preprocess.get("image_size") is None:
        print("error: --resize: the model records no single training image size (mixed sizes, or an older "
              "checkpoint)", file=sys.stderr)
        return 2
    result = predictor.predict(files, batch_size=args.batch_size, cache_dir=args.cache_dir, cache=not args.no_cache,
                               max_read_pixels=args.max_read_pixels, resize=args.resize, progress=True)
    write_csv(args.out, files, result)
    skipped = sum(1 for error in result.error if error)
    print(f"{len(files)} files: {len(files) - skipped} classified, {skipped} skipped with an error, {result.converted} "
          f"converted; {result.fitted} clouds fitted, {result.cached} from the cache"
          f"{f'; {ignored} other files ignored' if ignored else ''} -> {args.out}")
    if result.other_size and dims != 2:
        print(f"{result.other_size} samples brought to the training shape {predictor.settings.preprocess['image_size']} "
              f"(ragged: {predictor.settings.preprocess['signal']['ragged']})")
    elif result.other_size:
        size = "x".join(map(str, predictor.settings.preprocess["image_size"]))
        print(f"{result.other_size} images differ in size from the training images ({size}): "
              f"{'resized to it' if result.resized else 'fitted at their own size (--resize fits them at it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
