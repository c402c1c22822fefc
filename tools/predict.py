"""Classify image files with a trained model (a checkpoint or a bundle from ``arc export``); write a CSV.

    python tools/predict.py --model CKPT_OR_BUNDLE --input DIR_OR_FILES... --out FILE.csv \\
        [--batch-size 256] [--device cuda|cpu] [--cache-dir DIR | --no-cache] [--max-read-pixels N] [--resize]

Each image's cloud is fitted with the model's own decoder and settings (cached by content, so a
second run is instant) and classified; one row per file: path, pred, prob_<class>..., error.
The command and its library live in :mod:`arc.predict` and :mod:`arc.inference`.
"""
import sys

from arc.predict import main

if __name__ == "__main__":
    sys.exit(main())
