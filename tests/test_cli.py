"""tools/train.py and tools/anchor.py end to end on tiny generated data (CPU, W&B offline)."""
from __future__ import annotations

import csv
import os
import shutil
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from arc.cli import anchor_main, main
from arc.data.sources import open_source
from arc.field.config import FieldConfig, PretrainConfig
from arc.field.decoder import load_decoder
from arc.field.pretraining import pretrain_decoder
from arc.pipeline import pretraining_images

DATA = Path(__file__).parent / "data"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name in ("tiny.yaml", "tiny_pretrain.yaml"):
        shutil.copy(DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class FakeWandb:
    """What WandbMedia sends to W&B: keys of logged dicts and images, the metric definitions."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.experiment = SimpleNamespace(log=lambda data, commit=True: self.keys.extend(data),
                                          define_metric=lambda name, summary: self.keys.append(f"{summary}:{name}"))

    def log_image(self, key, images, step=None) -> None:
        self.keys.append(key)


def test_fit_then_test_then_predict(workdir, monkeypatch):
    from arc.callbacks import WandbMedia

    fake = FakeWandb()
    monkeypatch.setattr(WandbMedia, "_logger", staticmethod(lambda trainer: fake))
    cli = main(["fit", "--config", "tiny.yaml"])
    assert {"max:val/acc", "fit/psnr_hist/train", "fit/psnr_hist/val", "fit/psnr_hist/test", "val/clouds",
            "val/confusion_matrix", "test/confusion_matrix"} <= set(fake.keys)
    assert fake.keys.count("val/clouds") == 1
    best = workdir / "runs/tiny/version_0/checkpoints/best.ckpt"
    assert best.exists() and (workdir / "runs/tiny/latest").resolve() == best.parents[1].resolve()
    metrics = cli.trainer.callback_metrics
    for name in ("test/acc", "test/acc_macro", "test/acc_class/disc"):
        assert name in metrics, sorted(metrics)
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"
    assert cli.trainer.checkpoint_callback.best_model_score is not None
    assert list((workdir / "runs/tiny/version_0/wandb").glob("offline-run-*")), "W&B did not run offline"
    assert (workdir / "runs/tiny/version_0/config.yaml").exists()
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert "model.normaliser.mean" in checkpoint["state_dict"]
    from arc.classifier import ARCClassifier

    restored = ARCClassifier.load_from_checkpoint(best).eval()  # a CLI-made checkpoint loads in plain Python
    batch = next(iter(cli.datamodule.test_dataloader()))
    assert torch.equal(restored(batch), cli.model.eval()(batch))
    assert cli.datamodule.train_dataloader().pin_memory is False  # pinned only for a CUDA trainer

    main(["predict", "--config", "tiny.yaml", "--ckpt_path", str(best)])
    rows = list(csv.DictReader(open(workdir / "runs/tiny/version_1/predictions.csv")))
    assert len(rows) == 8 and {"index", "label", "pred", "top1_prob"} <= set(rows[0])
    assert sorted(int(r["index"]) for r in rows) == list(range(8))


def test_evaluating_on_a_new_canvas_fits_only_test_and_needs_the_training_decoder(workdir, capsys):
    """Paper Exp. 5: a model trained on one canvas, tested on randomly displaced images."""
    main(["fit", "--config", "tiny.yaml", "--test_after_fit", "false"])
    best = workdir / "runs/tiny/version_0/checkpoints/best.ckpt"
    (decoder,) = (workdir / "data/decoders").glob("*.safetensors")
    assert torch.load(best, map_location="cpu", weights_only=False)["arc_decoder_hash"]
    displaced = ["test", "--config", "tiny.yaml", "--data.canvas", "{size: 16, mode: random}", "--ckpt_path", str(best)]
    decoders = set((workdir / "data/decoders").glob("*.safetensors"))
    with pytest.raises(SystemExit):
        main(displaced)  # the new canvas would get a new decoder: its latents mean nothing to the model
    assert "trained on clouds of decoder" in capsys.readouterr().err
    assert set((workdir / "data/decoders").glob("*.safetensors")) == decoders, "refused only after pretraining"
    cli = main([*displaced, "--data.decoder", str(decoder)])
    assert "test/acc" in cli.trainer.callback_metrics
    store = cli.datamodule.cloud_store
    assert store.counts == {"test": 8} and not (store.path / "train").exists(), "train was refitted"
    assert store.decoder_hash == cli.model.decoder_hash


def test_every_run_has_its_own_folder_under_the_root_dir_given(workdir, capsys):
    main(["fit", "--config", "tiny.yaml", "--trainer.max_epochs", "1", "--trainer.default_root_dir", "elsewhere"])
    main(["fit", "--config", "tiny.yaml", "--trainer.max_epochs", "1", "--trainer.default_root_dir", "elsewhere"])
    for version in (0, 1):
        run = workdir / f"elsewhere/version_{version}"
        assert (run / "checkpoints/best.ckpt").exists() and (run / "config.yaml").exists()
        assert list((run / "wandb").glob("offline-run-*"))
    assert not (workdir / "runs").exists()
    assert f"checkpoint:  {workdir / 'elsewhere/version_1/checkpoints/best.ckpt'}" in capsys.readouterr().out


def test_invalid_values_end_with_one_message(workdir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "tiny.yaml", "--data.batch_size", "0"])
    assert exit_info.value.code == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--config", "tiny.yaml", "--model.init_args.augment", "{bogus: 1}"])
    assert "unknown augmentation 'bogus'" in capsys.readouterr().err


def test_standalone_pretraining_is_the_pipeline_computation_and_is_reused(workdir, capsys):
    main(["fit", "--config", "tiny_pretrain.yaml"])
    (path,) = (workdir / "data/decoders").glob("*.safetensors")
    decoder, _ = load_decoder(path)
    field, pretrain = FieldConfig(latent_dim=8, latents_per_pixel=0.1), PretrainConfig(images=6, steps=10)
    source = open_source("shapes", size=12, count={"train": 24, "val": 8, "test": 8})
    images, indices = pretraining_images(source, field, pretrain)
    reference, _ = pretrain_decoder(images, field, pretrain, "train", indices)
    for ours, theirs in zip(decoder.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

    mtime = path.stat().st_mtime_ns
    store = anchor_main(["--config", "tiny.yaml"])
    assert path.stat().st_mtime_ns == mtime, "the anchoring run pretrained again"
    assert "train: 24 clouds" in capsys.readouterr().out
    assert (store / "manifest.json").exists()


@pytest.mark.slow
def test_lightning_ddp_two_cpu_ranks_fit_disjoint_shards(workdir):
    """The real user path: ``--trainer.strategy ddp`` on 2 CPU processes (gloo) launched by Lightning."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "tools/train.py"), "fit", "--config", "tiny.yaml", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--data.init_args.shard_size", "8", "--trainer.max_epochs", "1"],
        capture_output=True, text=True, cwd=workdir, timeout=600, env={**os.environ, "WANDB_MODE": "offline"},
    )
    report = f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert "rank 0 fitted 16 train images" in done.stderr and "rank 1 fitted 8 train images" in done.stderr, report
    (store,) = (workdir / "data/stores").iterdir()
    assert sorted(p.name for p in (store / "train").iterdir()) == [f"shard-0000{k}.safetensors" for k in range(3)]
    assert "test/acc" in done.stdout, report


def test_wandb_online_without_credentials_is_one_line_and_an_unreachable_server_means_offline(workdir, monkeypatch, capsys):
    from arc.runs import ensure_wandb_never_prompts

    monkeypatch.setenv("NETRC", str(workdir / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(SystemExit):
        main(["fit", "--config", "tiny.yaml"])
    assert "WANDB_MODE=online needs W&B credentials" in capsys.readouterr().err
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    ensure_wandb_never_prompts()
    assert os.environ["WANDB_MODE"] == "offline"


def test_unwritable_run_and_data_folders_are_one_line_before_any_work(workdir, capsys):
    (workdir / "blocked").write_text("a file where a folder should be (unwritable even for root)")
    with pytest.raises(SystemExit):
        main(["fit", "--config", "tiny.yaml", "--trainer.default_root_dir", "blocked/runs"])
    assert "cannot write the run folder blocked/runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--config", "tiny.yaml", "--data.root", "blocked/data"])
    err = capsys.readouterr().err
    assert "cannot write data.root blocked/data" in err and "ARC_DATA" in err
    assert not list(workdir.glob("**/*.safetensors")), "work started before the check"


def test_a_class_without_train_images_is_refused_before_any_work(workdir, capsys):
    from PIL import Image

    for split, classes in (("train", "ab"), ("test", "abc")):
        for name in classes:
            (workdir / "tree" / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (12, 12), 40 * i + 20).save(workdir / "tree" / split / name / f"{i}.png")
    (workdir / "tree" / "train" / "d").mkdir()  # an empty class folder
    fit = ["fit", "--config", "tiny.yaml", "--data.source", "imagefolder:tree", "--data.source_options", "{}"]
    with pytest.raises(SystemExit):
        main(fit)
    assert "tree/test/c: class folder not present in the train split" in capsys.readouterr().err
    shutil.rmtree(workdir / "tree" / "test" / "c")
    with pytest.raises(SystemExit):
        main(fit)
    err = capsys.readouterr().err
    assert "class(es) 'd' have no train image" in err, err
    assert not (workdir / "data/decoders").exists(), "work started before the check"


@pytest.mark.parametrize("override, message", [
    (["--data.fit.stepz", "3"], "unknown key 'stepz' in data.fit (valid: steps, lr, pixel_fraction"),
    (["--data.field", "{latent_dims: 3}"], "unknown key 'latent_dims' in data.field (valid: latent_dim,"),
    (["--model.init_args.bogus", "1"], "unknown key 'bogus' in model (valid: num_classes,"),
    (["--data.field.latents_per_pixel", "abc"], "invalid value for data.field.latents_per_pixel"),
    (["--data.fit.steps", "0"], "fit.steps must be >= 1, got 0"),
])
def test_config_mistakes_name_the_key(workdir, capsys, override, message):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", "tiny.yaml", *override])
    err = capsys.readouterr().err
    assert done.value.code == 2 and message in err and "Traceback" not in err, err


def test_predict_writes_a_row_for_every_image_of_the_split_with_the_reason_for_a_skip(workdir):
    from PIL import Image

    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for name in "ab":
            (workdir / "tree" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (12, 12), 30 * i + (0 if name == "a" else 120)).save(workdir / "tree" / split / name / f"{i}.png")
    (workdir / "tree/test/a/broken.png").write_bytes(b"\x89PNG not really")
    data = ["--data.source", "imagefolder:tree", "--data.source_options", "{}", "--trainer.max_epochs", "1"]
    main(["fit", "--config", "tiny.yaml", *data, "--test_after_fit", "false"])
    best = next((workdir / "runs/tiny").glob("version_0/checkpoints/best.ckpt"))
    main(["predict", "--config", "tiny.yaml", *data, "--ckpt_path", str(best)])
    rows = list(csv.DictReader(open(workdir / "runs/tiny/version_1/predictions.csv")))
    assert len(rows) == 5
    (broken,) = [r for r in rows if r["error"]]
    assert broken["pred"] == "" and "skipped at anchoring" in broken["error"]
    assert all(r["pred"] and r["top1_prob"] for r in rows if not r["error"])
