"""The baselines' classifiers: the weight DataModule (ARC's splits, train-only standardisation, the store
reused), the MLP and XGBoost on its vectors, and the pixel CNN on ARC's image splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from arc.baseline_training.weights_data import WeightDataModule, standardise, weight_statistics
from arc.data.sources import open_source

INR = {"hidden": [4]}
FIT = {"steps": 3, "init": "shared"}


@pytest.fixture
def npz(tmp_path):
    """Two classes of 6x6 images: bright left half or bright right half, plus noise; 40 train, 10 test."""
    rng = np.random.default_rng(0)
    y = np.arange(50) % 2
    x = rng.random((50, 6, 6)) * 0.3
    x[y == 0, :, :3] += 0.7
    x[y == 1, :, 3:] += 0.7
    path = tmp_path / "two.npz"
    np.savez(path, x_train=x[:40].astype(np.float32), y_train=y[:40], x_test=x[40:].astype(np.float32), y_test=y[40:])
    return f"npz:{path}"


def data_module(npz, tmp_path, **kwargs) -> WeightDataModule:
    return WeightDataModule(source=npz, root=str(tmp_path / "root"), inr=INR, fit=FIT, batch_size=8, seed=3,
                            val_fraction=0.2, **kwargs)


def test_statistics_are_per_dimension_and_floored():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    mean, std = weight_statistics(train)
    assert mean.tolist() == [2.0, 5.0] and std[1] == pytest.approx(1e-6)
    assert standardise(train, mean, std)[:, 0].tolist() == pytest.approx([-2 ** -0.5, 2 ** -0.5])
    with pytest.raises(ValueError, match="N >= 2"):
        weight_statistics(train[:1])


def test_weight_data_serves_arc_splits_standardised_with_train_statistics(npz, tmp_path):
    data = data_module(npz, tmp_path)
    assert data.num_classes == 2 and data.class_names == ["0", "1"] and data.latent_dim == 4 * 2 + 4 + 4 + 1
    data.setup("fit")
    source = open_source(npz, val_fraction=0.2, seed=3)
    for split in ("train", "val"):
        x, y = data.arrays(split)
        assert x.shape == (len(source.split(split)), data.latent_dim) and x.dtype == torch.float32
        assert y.tolist() == source.split(split).labels.tolist()  # ARC's split, in source order
    train = data.arrays("train")[0]
    torch.testing.assert_close(train.mean(0), torch.zeros(data.latent_dim), atol=1e-5, rtol=0)
    raw = data.weight_store.collect("val")["weights"]
    torch.testing.assert_close(data.arrays("val")[0], ((raw.double() - data.weight_stats[0]) / data.weight_stats[1]).float())
    batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (8, data.latent_dim) and batch[1].dtype == torch.int64

    again = data_module(npz, tmp_path)  # a second run reuses the store: nothing refitted
    again.setup("test")
    assert again.weight_store.path == data.weight_store.path and set(again.weight_store.counts) == {"train", "val", "test"}
    torch.testing.assert_close(again.weight_stats[0], data.weight_stats[0])


def test_the_store_is_keyed_by_the_inr_and_the_seed(npz, tmp_path):
    base = data_module(npz, tmp_path).weight_store_dir
    assert data_module(npz, tmp_path).weight_store_dir == base
    other = WeightDataModule(source=npz, root=str(tmp_path / "root"), inr={"hidden": [5]}, fit=FIT, seed=3, val_fraction=0.2)
    assert other.weight_store_dir != base
    with pytest.raises(ValueError, match="data.seed"):
        WeightDataModule(source=npz, fit={"seed": 7}, seed=3)


def test_a_weight_store_of_other_inr_settings_is_refused(npz, tmp_path):
    from arc.store import StoreError

    store = str(tmp_path / "store")
    data_module(npz, tmp_path, store=store).setup("test")
    other = WeightDataModule(source=npz, root=str(tmp_path / "root"), inr={"hidden": [5]}, fit=FIT, seed=3,
                             val_fraction=0.2, store=store)
    with pytest.raises(StoreError, match=r"holds weights fitted with other settings \(differing: inr, param_count: inr .*"
                                         r"'hidden': \[4\].* there, .*'hidden': \[5\].* asked"):
        other.setup("test")


def test_representation_metrics_come_from_the_store_and_the_images(npz, tmp_path):
    from arc.baseline_training.pixels import PixelDataModule

    data = data_module(npz, tmp_path)
    assert data.representation_metrics() == {"repr/params_per_sample": 17.0}
    data.setup("fit")
    metrics = data.representation_metrics()
    assert set(metrics) == {"fit/psnr_mean", "fit/images_per_s", "repr/params_per_sample"} and metrics["fit/images_per_s"] > 0
    psnr = torch.cat([data.weight_store.collect(split)["psnr"] for split in ("train", "val")])
    assert metrics["fit/psnr_mean"] == pytest.approx(float(psnr.double().mean()))
    assert PixelDataModule(source=npz, root=str(tmp_path)).representation_metrics() == {"repr/params_per_sample": 36.0}


def test_weight_mlp_network_shapes_and_errors():
    from arc.baseline_training.weight_mlp import weight_mlp

    assert weight_mlp(17, 3, (8,))(torch.zeros(5, 17)).shape == (5, 3)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        weight_mlp(17, 1)


def test_weight_mlp_learns_the_weights_of_separable_images(npz, tmp_path):
    import lightning.pytorch as pl

    from arc.baseline_training.weight_mlp import WeightMLPClassifier

    data = WeightDataModule(source=npz, root=str(tmp_path / "root"), inr={"hidden": [8]}, fit={"steps": 30, "init": "shared"},
                            batch_size=8, val_fraction=0.2)
    model = WeightMLPClassifier(data.num_classes, data.latent_dim, hidden=(32,), dropout=0.0, lr=3e-3, seed=0)
    trainer = pl.Trainer(max_epochs=15, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["train/loss"] < 0.5
    assert trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"] >= 0.8
    same = WeightMLPClassifier(data.num_classes, data.latent_dim, hidden=(32,), seed=0)
    assert torch.equal(same.net[0].weight, WeightMLPClassifier(2, data.latent_dim, hidden=(32,), seed=0).net[0].weight)


def test_boosted_trees_fit_early_stopped_on_val():
    pytest.importorskip("xgboost")
    from arc.baseline_training.boosting import BoostConfig, boosted_log_probs, fit_boosted_trees

    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(120, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float() * 3
    booster = fit_boosted_trees(x[:80], y[:80], x[80:100], y[80:100], 3, BoostConfig(rounds=200, early_stopping=5), seed=1)
    assert booster.best_iteration + 1 < 200  # stopped early
    log_probs = boosted_log_probs(booster, x[100:])
    assert log_probs.shape == (20, 3) and torch.allclose(log_probs.exp().sum(1), torch.ones(20), atol=1e-5)
    assert (log_probs.argmax(1) == y[100:]).float().mean() >= 0.9
    with pytest.raises(ValueError, match="eta"):
        BoostConfig(eta=0)


def test_boosted_trees_under_lightning_and_from_a_checkpoint(npz, tmp_path):
    pytest.importorskip("xgboost")
    import lightning.pytorch as pl

    from arc.baseline_training.boosting import BoostConfig, BoostedTreesClassifier

    data = WeightDataModule(source=npz, root=str(tmp_path / "root"), inr={"hidden": [8]}, fit={"steps": 30, "init": "shared"},
                            batch_size=8, val_fraction=0.2)
    model = BoostedTreesClassifier(data.num_classes, data.latent_dim, boost={"rounds": 50, "early_stopping": 5}, seed=0)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    accuracy = trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"]
    assert accuracy >= 0.8 and model.boost == BoostConfig(rounds=50, early_stopping=5)
    trees = model.booster.get_dump()  # params/classifier counts every split and leaf of every tree
    assert model.classifier_parameters() == sum(tree.count("leaf=") + tree.count("<") for tree in trees) > len(trees)
    loaded = BoostedTreesClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert trainer.test(loaded, datamodule=data, verbose=False)[0]["test/acc"] == accuracy


def test_missing_xgboost_names_the_extra(monkeypatch):
    import sys

    from arc.baseline_training.boosting import BoostingError, require_xgboost

    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.raises(BoostingError, match=r"arc\[baselines\]"):
        require_xgboost()


def test_the_xgboost_config_without_xgboost_is_one_line(monkeypatch, tmp_path, capsys):
    import sys
    from pathlib import Path

    from arc.baseline_training.boosting import INSTALL
    from arc.cli import build_cli

    monkeypatch.setitem(sys.modules, "xgboost", None)
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).parents[1] / "configs/baselines/siren_xgboost.yaml"
    with pytest.raises(SystemExit) as done:
        build_cli(["--config", str(config), "--trainer.logger", "false", "--data.init_args.root", "unused"], run=False)
    error = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and error == [f"error: BoostingError: {INSTALL}"]


def test_pixel_cnn_on_arc_image_splits(npz, tmp_path):
    import lightning.pytorch as pl

    from arc.baseline_training.pixels import PixelCNNClassifier, PixelDataModule, collate_images, pixel_resnet

    assert pixel_resnet(3, 4, (8, 16))(torch.zeros(2, 3, 12, 12)).shape == (2, 4)
    with pytest.raises(ValueError, match="data.canvas"):
        collate_images([(torch.zeros(1, 4, 4), 0), (torch.zeros(1, 5, 5), 1)])
    images, labels = collate_images([None, (torch.zeros(1, 4, 4), 3)])  # an unreadable image is dropped
    assert images.shape == (1, 1, 4, 4) and labels.tolist() == [3]

    data = PixelDataModule(source=npz, root=str(tmp_path), batch_size=8, val_fraction=0.2, seed=3)
    source = open_source(npz, val_fraction=0.2, seed=3)
    served = torch.cat([labels for _, labels in data.val_dataloader()])
    assert served.tolist() == source.split("val").labels.tolist() and data.latent_dim == 1
    x = next(iter(data.test_dataloader()))[0]
    assert x.min() >= -1 and x.max() <= 1
    model = PixelCNNClassifier(data.num_classes, data.latent_dim, widths=(8, 16), lr=1e-2, seed=0)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    assert trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"] >= 0.8


def test_the_cli_trains_a_weight_baseline_and_names_its_store(npz, tmp_path, monkeypatch, capsys):
    from arc.cli import build_cli

    monkeypatch.chdir(tmp_path)
    config = {"trainer": {"max_epochs": 2, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                          "default_root_dir": str(tmp_path / "runs")},
              "model": {"class_path": "arc.baseline_training.weight_mlp.WeightMLPClassifier", "init_args": {"hidden": [16]}},
              "data": {"class_path": "arc.baseline_training.weights_data.WeightDataModule",
                       "init_args": {"source": npz, "root": str(tmp_path / "root"), "inr": INR, "fit": FIT, "batch_size": 8}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    cli = build_cli(["fit", "--config", str(tmp_path / "c.yaml")])
    out = capsys.readouterr().out
    assert "test/acc" in out and f"store:       {cli.datamodule.weight_store.path}" in out
