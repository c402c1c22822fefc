"""Where a run's files go and how it logs: one folder per run, and W&B that never prompts or hangs.

Every run gets ``<trainer.default_root_dir>/version_N``; checkpoints, the saved config,
predictions and W&B files go there, and ``<root>/latest`` links the newest training run.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

__all__ = ["RUN_DIR_ENV", "RunSetupError", "WandbSetupError", "ensure_writable", "ensure_wandb_never_prompts", "link_latest", "next_run_dir",
           "place_run", "wandb_has_credentials", "wandb_reachable"]

def wandb_has_credentials() -> bool:
    """True when W&B can log in without a prompt (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class RunSetupError(ValueError):
    """A folder a run must write that cannot be written."""


def ensure_writable(directory: Path, name: str, remedy: str) -> None:
    """Create ``directory`` and write a probe file in it, or raise :class:`RunSetupError` naming ``name`` and ``remedy``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise RunSetupError(f"cannot write {name} {directory}: {err.strerror or err}; {remedy}") from None


class WandbSetupError(ValueError):
    """W&B asked to log online without the means to."""


def wandb_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the W&B server (``WANDB_BASE_URL``, default api.wandb.ai) opens in ``timeout`` s."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ensure_wandb_never_prompts() -> None:
    """Run W&B offline (local ``wandb/offline-run-*``, sync later) unless a mode is set and usable.

    No credentials: offline. Credentials but the server does not answer within seconds: offline with
    one warning (instead of W&B's minutes-long wait and traceback). ``WANDB_MODE=online`` without
    credentials: :class:`WandbSetupError`.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode is not None:
        if mode == "online" and not wandb_has_credentials():
            raise WandbSetupError("WANDB_MODE=online needs W&B credentials: run `wandb login` or set WANDB_API_KEY, "
                                  "or unset WANDB_MODE to log offline")
        return
    if not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("no W&B credentials found: logging offline (sync later with `wandb sync`)")
    elif not wandb_reachable():
        os.environ["WANDB_MODE"] = "offline"
        log.warning("the W&B server does not answer: logging offline (sync later with `wandb sync`)")


RUN_DIR_ENV = "ARC_RUN_DIR"
"""Set while a run executes, so processes a strategy launches (DDP ranks) write to the same run folder."""


def next_run_dir(root: Path) -> Path:
    """``root/version_N``, N one past the highest existing version (0 in a new root): runs never overwrite."""
    versions = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    return root / f"version_{max(versions, default=-1) + 1}"


def place_run(config, run: Path) -> None:
    """Point the trainer, its checkpoint callbacks (without a dirpath) and W&B (without a save_dir) at ``run``."""
    config.trainer.default_root_dir = str(run)
    for callback in config.trainer.get("callbacks") or []:
        if str(callback.get("class_path", "")).endswith(".ModelCheckpoint") and callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(run / "checkpoints")
    loggers = config.trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if hasattr(logger, "get") and str(logger.get("class_path", "")).endswith(".WandbLogger"):
            if logger.init_args.get("save_dir") in (None, "."):
                logger.init_args.save_dir = str(run)


def link_latest(run: Path) -> None:
    """Point ``<root>/latest`` at the newest training run's folder (best effort: not every filesystem has links)."""
    latest = run.parent / "latest"
    try:
        if latest.is_symlink() or not latest.exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(run.name, target_is_directory=True)
    except OSError as err:
        log.info("could not link %s -> %s: %s", latest, run.name, err)
