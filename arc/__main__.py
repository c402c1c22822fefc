"""The ``arc`` command (also ``python -m arc``): one subcommand per entry point of the library.

    arc fit --config demo                        # LightningCLI: fit, validate, test
    arc predict --model CKPT --input DIR --out preds.csv
    arc anchor | reconstruct | export | store | experiment ...

``arc SUBCOMMAND --help`` shows a subcommand's options. Each subcommand's module is imported
only when it runs, so ``arc --help`` stays fast and lists every subcommand of this install.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Optional, Sequence


def _lightning(subcommand: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        from arc.cli import main

        main([subcommand, *args])
        return 0
    return run


def _anchor(args: list[str]) -> int:
    from arc.cli import anchor_main

    anchor_main(args)
    return 0


def _module_main(module: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        try:
            entry = importlib.import_module(module).main
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            print(f"arc: {module} is not part of this install", file=sys.stderr)
            return 2
        return int(entry(args) or 0)
    return run


SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "fit": (_lightning("fit"), "train a classifier (pretrain and anchor as needed), then test the best checkpoint"),
    "validate": (_lightning("validate"), "evaluate a checkpoint on the validation split"),
    "test": (_lightning("test"), "evaluate a checkpoint on the test split"),
    "predict": (_module_main("arc.predict"), "classify new images with a checkpoint or bundle, one CSV row per file"),
    "anchor": (_anchor, "fit a dataset's clouds once (decoder and store) for later classifier runs"),
    "reconstruct": (_module_main("arc.reconstruct"), "render stored clouds and latent edits back to images"),
    "export": (_module_main("arc.export"), "write a checkpoint as a bundle to share (safetensors + JSON)"),
    "experiment": (_module_main("arc.experiments.main"), "run a grid of training runs (settings x seeds) and tabulate "
                   "them: arc experiment GRID.yaml [--parallel N] [--executor slurm]"),
    "store": (_module_main("arc.store.verify"), "check a cloud store's shards and statistics: arc store verify STORE [--repair]"),
}


def usage() -> str:
    lines = [f"  {name:<12} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join([
        "usage: arc SUBCOMMAND [options]   (arc SUBCOMMAND --help for its options)", "", "subcommands:", *lines, "",
        "Configs are files or packaged names: arc fit --config demo (also pretrain/demo, mnist, ...).",
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``arc SUBCOMMAND ARGS...``; the exit status of the subcommand (2 for an unknown one)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args and args[0] == "--version":
        from arc import __version__

        print(f"arc {__version__}")
        return 0
    if not args or args[0] not in SUBCOMMANDS:
        print(usage(), file=sys.stderr)
        if args:
            print(f"\narc: unknown subcommand {args[0]!r}", file=sys.stderr)
        return 2
    run, _ = SUBCOMMANDS[args[0]]
    return run(args[1:])


if __name__ == "__main__":
    sys.exit(main())
