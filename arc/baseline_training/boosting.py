"""Gradient-boosted trees (XGBoost) on flattened INR weight vectors (Malherbe's INR-as-vectoriser baseline).

The numeric part, :func:`fit_boosted_trees` and :func:`boosted_log_probs`, takes tensors and knows no
Lightning: ``multi:softprob`` trees on the standardised weight vectors of
:class:`arc.baseline_training.weights_data.WeightDataModule`, stopped early on the val split's log loss
(the trees of the best round are kept). :class:`BoostedTreesClassifier` runs it under the LightningCLI
(``tools/train.py fit --config configs/baselines/siren_xgboost.yaml``): the trees are fitted on the
whole train split when fit starts, then val and test are scored with the keys of :class:`~arc.classifier.ARCClassifier`
(``val/acc``, ``test/acc`` ...); checkpoints carry the trees as XGBoost's JSON.

XGBoost is an optional extra (``pip install 'arc[baselines]'``, or the ``xgboost-cpu`` build).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from arc.baseline_training.weight_mlp import WeightClassifier
from arc.seeding import run_seed

INSTALL = "XGBoost is not installed: pip install 'arc[baselines]' (or the CPU build: pip install xgboost-cpu)"


class BoostingError(ImportError):
    """XGBoost is missing (the message names the extra to install)."""


def require_xgboost() -> Any:
    """The ``xgboost`` module, or :class:`BoostingError` saying what to install."""
    try:
        import xgboost
    except ImportError as err:
        raise BoostingError(INSTALL) from err
    return xgboost


@dataclass(frozen=True)
class BoostConfig:
    """Tree settings: at most ``rounds`` trees, stopped after ``early_stopping`` rounds without a better val
    log loss; ``max_depth``, learning rate ``eta``, row ``subsample`` and column ``colsample`` per tree; ``threads`` (0: all)."""

    rounds: int = 500
    early_stopping: int = 30
    max_depth: int = 6
    eta: float = 0.1
    subsample: float = 0.8
    colsample: float = 0.5
    threads: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.early_stopping < 1 or self.max_depth < 1 or self.threads < 0:
            raise ValueError("boost.rounds, boost.early_stopping and boost.max_depth must be >= 1, boost.threads >= 0")
        if not (self.eta > 0 and 0 < self.subsample <= 1 and 0 < self.colsample <= 1):
            raise ValueError("boost.eta must be > 0, boost.subsample and boost.colsample in (0, 1]")


def fit_boosted_trees(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, num_classes: int,
                      config: BoostConfig = BoostConfig(), seed: int = 0) -> Any:
    """Fit ``multi:softprob`` trees on [N, P] vectors and [N] labels, early-stopped on val; an ``xgboost.Booster``."""
    xgb = require_xgboost()
    params = {
        "objective": "multi:softprob", "num_class": int(num_classes), "eval_metric": "mlogloss", "tree_method": "hist",
        "max_depth": config.max_depth, "eta": config.eta, "subsample": config.subsample,
        "colsample_bytree": config.colsample, "seed": int(seed) % 2**31, "verbosity": 0,
    }
    if config.threads:
        params["nthread"] = config.threads
    train = xgb.DMatrix(x_train.numpy(), label=y_train.numpy())
    val = xgb.DMatrix(x_val.numpy(), label=y_val.numpy())
    return xgb.train(params, train, num_boost_round=config.rounds, evals=[(val, "val")],
                     early_stopping_rounds=config.early_stopping, verbose_eval=False)


def boosted_log_probs(booster: Any, x: Tensor) -> Tensor:
    """Log class probabilities [N, C] (float32) of the best round's trees for [N, P] vectors."""
    xgb = require_xgboost()
    best = getattr(booster, "best_iteration", None)
    rounds = (0, best + 1) if best is not None else (0, 0)
    probs = booster.predict(xgb.DMatrix(x.detach().cpu().numpy()), iteration_range=rounds)
    return torch.from_numpy(probs).float().clamp_min(1e-12).log()


class BoostedTreesClassifier(WeightClassifier):
    """XGBoost on the weight vectors under Lightning: the trees are fitted when fit starts (before the sanity
    check) from the DataModule's whole train and val arrays (``datamodule.arrays``); training steps do nothing
    (one epoch is enough).

    num_classes, latent_dim, class_names: linked from the DataModule by the CLI. boost: :class:`BoostConfig`
    (a mapping of its keys). seed: the trees' seed (default: the training seed).
    """

    def __init__(self, num_classes: int, latent_dim: int, boost: BoostConfig = BoostConfig(),
                 class_names: Optional[list[str]] = None, seed: Optional[int] = None) -> None:
        super().__init__(num_classes)
        require_xgboost()
        self.boost = boost if isinstance(boost, BoostConfig) else BoostConfig(**dict(boost))
        self.save_hyperparameters({"num_classes": num_classes, "latent_dim": latent_dim, "boost": asdict(self.boost),
                                   "class_names": class_names, "seed": seed})
        self.automatic_optimization = False
        self.booster: Any = None
        self.step_counter = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # see training_step

    def classifier_parameters(self) -> int:
        """The trees' node count (splits and leaves, each a threshold or a value): what the run reports as
        ``params/classifier``; 0 before the trees are fitted."""
        return 0 if self.booster is None else sum(len(tree.splitlines()) for tree in self.booster.get_dump())

    def forward(self, weights: Tensor) -> Tensor:
        if self.booster is None:
            raise RuntimeError("the trees are not fitted yet: run fit, or load a checkpoint")
        return boosted_log_probs(self.booster, weights).to(weights.device)

    def on_fit_start(self) -> None:
        if self.booster is None:
            data = self.trainer.datamodule
            self.booster = fit_boosted_trees(*data.arrays("train"), *data.arrays("val"), self.hparams.num_classes,
                                             self.boost, run_seed(self.hparams.seed))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Nothing to learn (the trees are fitted in ``on_fit_start``): an empty optimiser step, so Lightning
        counts steps and ModelCheckpoint saves; logs the rounds kept."""
        self.optimizers().step()
        if batch_idx == 0:
            self.log("train/rounds", float(self.booster.best_iteration + 1), on_step=True, on_epoch=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.step_counter], lr=0.0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.booster is not None:
            checkpoint["xgboost"] = bytes(self.booster.save_raw("json"))
            checkpoint["xgboost_best_iteration"] = int(self.booster.best_iteration)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "xgboost" in checkpoint:
            xgb = require_xgboost()
            self.booster = xgb.Booster()
            self.booster.load_model(bytearray(checkpoint["xgboost"]))
            self.booster.best_iteration = checkpoint["xgboost_best_iteration"]
