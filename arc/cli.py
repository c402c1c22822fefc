"""The one-command LightningCLI: ``python tools/train.py fit --config configs/demo.yaml``.

Subcommands fit / validate / test / predict; YAML with omegaconf interpolation;
the config is saved with each run and sent to W&B; ``fit`` runs ``test`` on the
best-val checkpoint afterwards (``--test_after_fit false`` to skip).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden

log = logging.getLogger(__name__)


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
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.latent_dim", "model.init_args.latent_dim", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit", True) or not is_overridden("test_dataloader", self.datamodule):
            return
        has_best = self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if has_best else None)


def main(args: Optional[list[str]] = None) -> ARCCLI:
    """Entry point of ``tools/train.py``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_wandb_never_prompts()
    return ARCCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToRun,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        seed_everything_default=0,
        args=args,
    )



def anchor_main(args: Optional[list[str]] = None) -> Path:
    """Entry point of ``tools/anchor.py``: run the representation stages of a config's DataModule."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_wandb_never_prompts()
    cli = ARCCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        parser_kwargs={"parser_mode": "omegaconf"},
        seed_everything_default=0,
        args=args,
        run=False,
    )
    store = cli.datamodule.prepare_clouds()
    print(f"store: {store.path}")
    for split, count in store.counts.items():
        print(f"  {split}: {count} clouds, {len(store.skipped.get(split, []))} skipped")
    return store.path
