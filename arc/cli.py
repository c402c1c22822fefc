"""The one-command LightningCLI: ``python tools/train.py fit --config configs/demo.yaml``.

Subcommands fit / validate / test / predict; YAML with omegaconf interpolation; a config lists
the shared files it builds on under ``compose`` (see :func:`expand_compose`); the config is
saved with each run and sent to W&B; ``fit`` runs ``test`` on the best-val checkpoint afterwards
(``--test_after_fit false`` to skip).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar, get_type_hints

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden

from arc.config_files import expand_compose
from arc.field.decoder import load_decoder
from arc.model import ClassifierConfigError
from arc.runs import RUN_DIR_ENV, ensure_wandb_never_prompts, ensure_writable, link_latest, next_run_dir, place_run

log = logging.getLogger(__name__)
T = TypeVar("T")


class SaveConfigToRun(SaveConfigCallback):
    """Save the resolved config into the run folder and, as a nested dict, into the W&B run's config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        nested = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        nested.pop("compose", None)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams(nested)


class ARCCLI(LightningCLI):
    """LightningCLI wired for arc: data facts flow into the model; fit is followed by test."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--compose", type=Optional[list[str]], default=None,
                            help="shared config files this config builds on (expanded before parsing)")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, evaluate the test split with the best-val checkpoint")
        parser.add_argument("--tf32", type=bool, default=False,
                            help="allow TF32 tensor-core matmuls for float32 on CUDA (the paper's setting; "
                                 "no effect on the CPU; fitting follows data.fit.precision)")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.latent_dim", "model.init_args.latent_dim", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.backends.cuda.matmul.allow_tf32 = bool(config.get("tf32", False))
        if config.trainer.get("logger") is False and config.trainer.get("callbacks"):  # nothing to monitor into
            config.trainer.callbacks = [c for c in config.trainer.callbacks
                                        if not str(c.get("class_path", "")).endswith(".LearningRateMonitor")]
        if self.subcommand is not None:
            inherited = os.environ.get(RUN_DIR_ENV)
            self.run_dir = Path(inherited) if inherited else next_run_dir(Path(config.trainer.default_root_dir))
            place_run(config, self.run_dir)
            if not inherited:
                ensure_writable(self.run_dir, "the run folder", "set --trainer.default_root_dir or ARC_RUNS to a "
                                "writable folder")
                os.environ[RUN_DIR_ENV] = str(self.run_dir)
                if self.subcommand == "fit":
                    link_latest(self.run_dir)

    def check_checkpoint_decoder(self) -> None:
        """Before any fitting: refuse a checkpoint whose training clouds come from another decoder than
        the one this config's data would be fitted with (its latents would mean nothing to the model)."""
        path = self.config[self.subcommand].get("ckpt_path")
        decoder = getattr(self.datamodule, "decoder_path", None)
        if not path or decoder is None or not Path(path).is_file():
            return
        recorded = torch.load(path, map_location="cpu", weights_only=False).get("arc_decoder_hash")
        served = load_decoder(decoder)[1].hash if Path(decoder).is_file() else None
        if recorded is not None and served != recorded:
            source = f"decoder {served[:12]}" if served else f"a new decoder (no decoder at {decoder} yet)"
            raise ClassifierConfigError(
                f"this classifier was trained on clouds of decoder {recorded[:12]}, but this config's clouds would come "
                f"from {source}; their latents are not comparable. Pass the training decoder with --data.decoder PATH")

    before_validate = before_test = check_checkpoint_decoder

    def before_predict(self) -> None:
        from arc.callbacks import PredictionWriter

        self.check_checkpoint_decoder()
        if not any(isinstance(callback, PredictionWriter) for callback in self.trainer.callbacks):
            path = Path(self.trainer.default_root_dir) / "predictions.csv"
            self.trainer.callbacks.append(PredictionWriter(path))
            log.info("writing predictions to %s", path)

    def after_fit(self) -> None:
        self.fit_metrics = float_metrics(self.trainer.callback_metrics)  # testing replaces the val metrics
        testable = is_overridden("test_dataloader", self.datamodule) and is_overridden("test_step", self.model)
        if self.config.fit.get("test_after_fit", True) and testable:
            has_best = self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)
        self.end_run()

    def after_validate(self) -> None:
        self.end_run()

    def after_test(self) -> None:
        self.end_run()

    def after_predict(self) -> None:
        self.end_run()

    def end_run(self) -> None:
        """Write ``metrics.json`` and print where the run's folder, checkpoint, predictions, store and W&B run are (rank 0), then close
        the W&B run, so the next run in this process starts its own."""
        if self.trainer.global_rank == 0:
            self.write_metrics()
            self.print_run_summary()
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    def write_metrics(self) -> None:
        """``<run>/metrics.json``: every float metric of the run (the fit's last val metrics, then what the last
        stage logged), ``val/acc_best`` (the checkpoint's monitored best, named after its monitor),
        ``params/classifier`` (trainable parameters, or the model's own ``classifier_parameters()``) and the data
        module's ``representation_metrics()``."""
        metrics = {**getattr(self, "fit_metrics", {}), **float_metrics(self.trainer.callback_metrics)}
        checkpoint = self.trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_score is not None:
            metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
        count = getattr(self.model, "classifier_parameters", None)  # a model whose parameters are not tensors (trees)
        metrics["params/classifier"] = float(count() if callable(count) else
                                             sum(p.numel() for p in self.model.parameters() if p.requires_grad))
        representation = getattr(self.datamodule, "representation_metrics", None)
        if callable(representation):
            metrics.update(representation())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))

    def print_run_summary(self) -> None:
        """The last lines of a run: where its folder, checkpoint, predictions, store and W&B run are."""
        where = {"run": self.run_dir}
        checkpoint = self.trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            where["checkpoint"] = checkpoint.best_model_path
        writer = next((c for c in self.trainer.callbacks if type(c).__name__ == "PredictionWriter"), None)
        if writer is not None and writer.path.exists():
            where["predictions"] = writer.path
        store = getattr(self.datamodule, "cloud_store", None) or getattr(self.datamodule, "weight_store", None)
        if store is not None:  # ARC's cloud store, or the weight baselines' store of fitted INRs
            where["store"] = store.path
        decoder = getattr(self.datamodule, "decoder_path", None)
        if decoder is not None and Path(decoder).exists():
            where["decoder"] = decoder
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                where["wandb"] = logger.experiment.url or Path(logger.experiment.dir).parent
        print("\n".join(f"{key + ':':<12} {value}" for key, value in where.items()), flush=True)


def float_metrics(metrics: dict) -> dict[str, float]:
    """The one-number entries of a trainer's ``callback_metrics`` as floats."""
    return {name: float(value) for name, value in metrics.items()
            if isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1)}


def user_error(error: BaseException) -> BaseException:
    """The exception to show for a chain: the outermost one raised by arc's own error classes,
    else the innermost (the user's invalid value, not the parser's wrapper around it)."""
    chain = [error]
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
        chain.append(error)
    ours = [e for e in chain if type(e).__module__.split(".")[0] in ("arc", "ptv3")]
    return ours[0] if ours else chain[-1]


UNKNOWN_KEY = re.compile(
    r"class_path '([\w.]+)':\s+(?:unrecognized arguments: --|Option '|Group '([\w.]+)' does not accept option ')([\w.]+)")


def unknown_key_message(parser_message: str, group: str) -> Optional[str]:
    """"unknown key 'stepz' in data.fit (valid: steps, lr, ...)" for a parser error about a typo in a typed
    settings block of a ``class_path`` group (``group``: "model" or "data"); None for any other error."""
    found = UNKNOWN_KEY.search(parser_message)
    if found is None:
        return None
    class_path, group_key, key = found.groups()
    dotted = f"{group_key}.{key}" if group_key else key.split("=")[0]
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    block, _, key = dotted.rpartition(".")
    hints = {}
    for klass in getattr(cls, "__mro__", ()):
        if "__init__" in vars(klass):
            hints.update({k: v for k, v in get_type_hints(klass.__init__).items() if k not in hints})
    settings = hints.get(block.split(".")[0]) if block else None
    if settings is None or not dataclasses.is_dataclass(settings):
        valid = [k for k in hints if k not in ("return", "args", "kwargs")]
        return f"unknown key '{dotted}' in {group} (valid: {', '.join(valid)})" if valid else None
    valid = [f.name for f in dataclasses.fields(settings)]
    return f"unknown key '{key}' in {group}.{block} (valid: {', '.join(valid)})"


INVALID_VALUE = re.compile(r"class_path '[\w.]+':\s+Parser key \"([\w.]+)\":\s+(.+)")


def invalid_value_message(parser_message: str, group: str) -> Optional[str]:
    """"invalid value for data.field.latents_per_pixel: Expected a <class 'float'>. Got value: abc" for a parser
    error about one value of a ``class_path`` group; None for any other error."""
    found = INVALID_VALUE.search(parser_message)
    return f"invalid value for {group}.{found.group(1)}: {found.group(2).strip()}" if found else None


def exit_on_invalid_config(run: Callable[[], T]) -> T:
    """Run ``run``; an invalid value ends the program with one message (``ARC_DEBUG=1`` shows the traceback)."""
    try:
        return run()
    except ArgumentError as error:
        if os.environ.get("ARC_DEBUG"):
            raise
        text = str(error)
        group = "data" if "Parser key \"data\"" in text else "model"
        print(f"error: {unknown_key_message(text, group) or invalid_value_message(text, group) or text}", file=sys.stderr)
        print("(--help lists every option with its default)", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as error:
        if os.environ.get("ARC_DEBUG"):
            raise
        cause = user_error(error)
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def build_cli(args: Optional[list[str]] = None, run: bool = True) -> ARCCLI:
    """The arc CLI (W&B never prompts; invalid values end with one message)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    owns_run_env = RUN_DIR_ENV not in os.environ

    def make() -> ARCCLI:
        ensure_wandb_never_prompts()
        if args is None:  # the composed files in the process's own command line (which DDP launchers repeat)
            sys.argv[1:] = expand_compose(sys.argv[1:])
        return ARCCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigToRun if run else None,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            seed_everything_default=0,
            args=None if args is None else expand_compose(list(args)),
            run=run,
        )

    try:
        return exit_on_invalid_config(make)
    finally:
        if owns_run_env:  # the next run in this process gets a folder of its own
            os.environ.pop(RUN_DIR_ENV, None)


def main(args: Optional[list[str]] = None) -> ARCCLI:
    """Entry point of ``tools/train.py``: fit / validate / test / predict."""
    return build_cli(args)


def anchor_main(args: Optional[list[str]] = None) -> Path:
    """Entry point of ``tools/anchor.py``: run the representation stages of a config's DataModule."""
    cli = build_cli(args, run=False)
    store = exit_on_invalid_config(cli.datamodule.prepare_clouds)
    print(f"store: {store.path}")
    for split, count in store.counts.items():
        print(f"  {split}: {count} clouds, {len(store.skipped.get(split, []))} skipped")
    return store.path
