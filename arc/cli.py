"""The one-command LightningCLI: ``python tools/train.py fit --config configs/demo.yaml``.

Subcommands fit / validate / test / predict; YAML with omegaconf interpolation;
the config is saved with each run and sent to W&B; ``fit`` runs ``test`` on the
best-val checkpoint afterwards (``--test_after_fit false`` to skip).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden

log = logging.getLogger(__name__)
T = TypeVar("T")


def wandb_has_credentials() -> bool:
    """True when W&B can log in without a prompt (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def ensure_wandb_never_prompts() -> None:
    """Run W&B offline (local ``wandb/offline-run-*``) unless a mode is set or credentials exist."""
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("no W&B credentials found: logging offline (sync later with `wandb sync`)")


class SaveConfigToRun(SaveConfigCallback):
    """Save the resolved config next to the run and into the W&B run's config."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams({"config": self.parser.dump(self.config, skip_none=False, format="json")})


class ARCCLI(LightningCLI):
    """LightningCLI wired for arc: data facts flow into the model; fit is followed by test."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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

    def before_predict(self) -> None:
        from arc.classifier import PredictionWriter

        if not any(isinstance(callback, PredictionWriter) for callback in self.trainer.callbacks):
            path = Path(self.trainer.default_root_dir) / "predictions.csv"
            self.trainer.callbacks.append(PredictionWriter(path))
            log.info("writing predictions to %s", path)

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit", True) or not is_overridden("test_dataloader", self.datamodule):
            return
        has_best = self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


def user_error(error: BaseException) -> BaseException:
    """The exception to show for a chain: the outermost one raised by arc's own error classes,
    else the innermost (the user's invalid value, not the parser's wrapper around it)."""
    chain = [error]
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
        chain.append(error)
    ours = [e for e in chain if type(e).__module__.split(".")[0] in ("arc", "ptv3")]
    return ours[0] if ours else chain[-1]


def exit_on_invalid_config(run: Callable[[], T]) -> T:
    """Run ``run``; an invalid value ends the program with one message (``ARC_DEBUG=1`` shows the traceback)."""
    try:
        return run()
    except ValueError as error:
        if os.environ.get("ARC_DEBUG"):
            raise
        cause = user_error(error)
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def build_cli(args: Optional[list[str]] = None, run: bool = True) -> ARCCLI:
    """The arc CLI (W&B never prompts; invalid values end with one message)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_wandb_never_prompts()
    return exit_on_invalid_config(lambda: ARCCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToRun if run else None,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        seed_everything_default=0,
        args=args,
        run=run,
    ))


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
