"""``arc export CKPT OUT`` (also ``python -m arc.export``): write a checkpoint's bundle (:mod:`arc.bundle`)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from arc.bundle import export_bundle
from arc.inference import ModelFileError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); 0 on success, 2 when the model cannot be read."""
    p = argparse.ArgumentParser(prog="arc export", description="Write a trained model as a bundle directory: "
                                "safetensors weights and one JSON of settings (no pickle), for `arc predict` "
                                "and arc.load.")
    p.add_argument("model", help="a classifier checkpoint (.ckpt) or a bundle directory")
    p.add_argument("out", help="the bundle directory to write")
    args = p.parse_args(argv)
    try:
        out = export_bundle(args.model, args.out)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"bundle: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
