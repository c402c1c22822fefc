"""Every shipped config parses and instantiates (its images swapped for bundled digits: no download),
every pretraining config names the decoder its classifier config reads, and every baseline config
(configs/baselines) builds its own model and data module."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from arc.baseline_training.boosting import BoostedTreesClassifier
from arc.baseline_training.pixels import PixelCNNClassifier, PixelDataModule
from arc.baseline_training.weight_mlp import WeightMLPClassifier
from arc.baseline_training.weight_transformer import WeightTransformerClassifier
from arc.baseline_training.weights_data import WeightDataModule
from arc.cli import build_cli
from arc.classifier import ARCClassifier
from arc.data.module import ARCDataModule, PretrainDataModule
from arc.pretrain import DecoderPretraining

ROOT = Path(__file__).parents[1] / "configs"
BASELINES = {  # configs/baselines/<name>.yaml -> (model, data module, optional package it needs)
    "siren_mlp": (WeightMLPClassifier, WeightDataModule, None),
    "siren_xgboost": (BoostedTreesClassifier, WeightDataModule, "xgboost"),
    "cnn": (PixelCNNClassifier, PixelDataModule, None),
    "siren_transformer": (WeightTransformerClassifier, WeightDataModule, None),
    "dwsnets_siren_transformer": (WeightTransformerClassifier, WeightDataModule, None),
}
FRAGMENTS = ("base", "data")  # composed by the configs below, not run on their own
GRIDS = "experiments"  # grid files of tools/experiment.py, not configs (tests/test_experiment_grids.py)
CONFIGS = sorted(c for c in ROOT.rglob("*.yaml") if c.parent.name not in (*FRAGMENTS, GRIDS))
CLASSIFIERS = sorted(ROOT.glob("*.yaml"))
OFFLINE = ["--data.init_args.source", "digits", "--data.init_args.source_options", "{size: 16}",
           "--data.init_args.canvas", "null", "--data.init_args.root", "unused"]
SIGNALS = {  # configs of 1-D / 3-D data: their bundled stand-in source (spec, options, classes)
    "demo_series": ("waves", "{length: 32, count: 12}", 6),
    "series": ("waves", "{length: 32, count: 12}", 6),
    "speech_commands": ("waves", "{length: 32, count: 12}", 6),
    "demo_volume": ("solids", "{size: 8, count: 12}", 6),
}
CPU_DEMOS = ("demo", "demo_series", "demo_volume", "series")  # CPU configs: float32 without TF32


def offline(config: Path) -> list[str]:
    """The CLI arguments that swap a config's data for bundled data of the same dimension."""
    if config.stem not in SIGNALS:
        return OFFLINE
    spec, options, _ = SIGNALS[config.stem]
    return ["--data.init_args.source", spec, "--data.init_args.source_options", options, "--data.init_args.root", "unused"]


@pytest.fixture(autouse=True)
def restore_tf32():
    before = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(c.parents[1])) for c in CONFIGS])
def test_config_instantiates(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if config.parent.name == "baselines" and BASELINES[config.stem][2]:
        pytest.importorskip(BASELINES[config.stem][2])
    torch.backends.cuda.matmul.allow_tf32 = config.stem not in CPU_DEMOS  # the config must set it either way
    cli = build_cli(["--config", str(config), *offline(config), "--trainer.logger", "false"], run=False)
    paper = config.parent.name not in ("pretrain", "baselines") and config.stem not in CPU_DEMOS
    assert torch.backends.cuda.matmul.allow_tf32 == paper, "paper configs train with TF32 (the authors' setting), others not"
    if config.parent.name == "baselines":
        model, data, _ = BASELINES[config.stem]
        assert isinstance(cli.model, model) and isinstance(cli.datamodule, data)
        assert cli.model.hparams.num_classes == 10 and cli.model.hparams.latent_dim == cli.datamodule.latent_dim
        assert any(getattr(c, "monitor", None) == "val/acc" for c in cli.trainer.callbacks)
        if isinstance(cli.datamodule, WeightDataModule):
            assert cli.datamodule.weight_store_dir.parent == Path("unused/weights")
        return
    if config.parent.name == "pretrain":
        assert isinstance(cli.model, DecoderPretraining) and isinstance(cli.datamodule, PretrainDataModule)
    else:
        assert isinstance(cli.model, ARCClassifier) and isinstance(cli.datamodule, ARCDataModule)
        assert cli.model.hparams.num_classes == (SIGNALS[config.stem][2] if config.stem in SIGNALS else 10)
        assert cli.model.hparams.latent_dim == cli.datamodule.field.latent_dim
        assert any(getattr(c, "monitor", None) == "val/acc" for c in cli.trainer.callbacks)
        assert not any(type(c).__name__ == "LearningRateMonitor" for c in cli.trainer.callbacks)  # logger false
    assert cli.datamodule.decoder_path.parent == Path("unused/decoders")


def test_paper_configs_keep_the_paper_settings():
    cli = build_cli(["--config", str(ROOT / "cifar10.yaml"), *OFFLINE, "--trainer.logger", "false"],
                    run=False)
    data, model = cli.datamodule, cli.model
    assert (data.field.latent_dim, data.field.neighbours, data.field.latents_per_pixel) == (32, 4, 0.05)
    assert (data.fit.steps, data.fit.lr, data.fit.pixel_fraction) == (500, 5e-3, 0.25)
    assert (data.pretrain.images, data.pretrain.steps) == (100, 500)
    assert data.batch_size == 1024 and cli.trainer.max_epochs == 300
    assert model.hparams.augment == {"mask": 0.3, "arcmix": {"alpha": 1.0}}
    assert cli.config["tf32"] is True and torch.backends.cuda.matmul.allow_tf32


def resolved(config: Path, capsys) -> dict:
    """The config as the CLI resolves it (composed files merged, defaults filled), without instantiating it."""
    with pytest.raises(SystemExit) as done:
        build_cli(["--config", str(config), "--print_config"], run=False)
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", CLASSIFIERS, ids=[c.stem for c in CLASSIFIERS])
def test_pretraining_config_names_the_decoder_of_its_classifier_config(config, capsys):
    pretrain = ROOT / "pretrain" / config.name
    assert pretrain.exists(), f"no pretraining config for {config.name}"
    classify, pretrained = resolved(config, capsys)["data"], resolved(pretrain, capsys)["data"]
    assert classify["class_path"] == "arc.data.module.ARCDataModule"
    assert pretrained["class_path"] == "arc.data.module.PretrainDataModule"
    assert pretrained["init_args"] == classify["init_args"]  # the decoder path derives from these


def test_a_composed_config_is_the_shared_blocks_plus_its_own_settings():
    cli = build_cli(["--config", str(ROOT / "fmnist_pad100.yaml"), *OFFLINE, "--trainer.logger", "false"], run=False)
    backbone = cli.model.model.backbone
    assert backbone.grid_origin == "frame" and len(backbone.stages) == 4  # its own setting on the paper backbone
    assert cli.datamodule.field.offset_scale == 20.0 and cli.trainer.max_epochs == 300


def test_compose_errors_name_the_file(tmp_path):
    from arc.config_files import ComposeError, composed_files

    (tmp_path / "a.yaml").write_text("compose: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("compose: [a.yaml]\n")
    with pytest.raises(ComposeError, match="cycle"):
        composed_files(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("compose: [missing.yaml]\n")
    with pytest.raises(ComposeError, match="missing.yaml.*composed by"):
        composed_files(tmp_path / "c.yaml")
