"""One config and one seed give one model: whatever ran before, however many threads or loader workers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arc.seeding import derive_seed, item_seed, run_seed

DATA = Path(__file__).parent / "data"


RUN = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from arc.cli import main
cli = main(["fit", "--config", "repro.yaml", *sys.argv[3:]])
torch.save({k: v.clone() for k, v in cli.model.state_dict().items()}, sys.argv[2] + ".pt")
json.dump({k: float(v) for k, v in cli.trainer.callback_metrics.items()}, open(sys.argv[2] + ".json", "w"))
"""


def train(workdir: Path, run: str, *overrides: str, threads: int = 2) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fit + test ``repro.yaml`` in a new process in ``workdir`` (the store lives in workdir/data, the run in
    workdir/run), as a user runs the command; the tested (best-val) weights and every logged metric."""
    env = {**os.environ, "ARC_RUNS": str(workdir / run), "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "-c", RUN, str(threads), str(workdir / run), *overrides], cwd=workdir,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = torch.load(workdir / f"{run}.pt")
    return weights, json.loads((workdir / f"{run}.json").read_text())


def assert_same_run(a, b) -> None:
    (weights_a, metrics_a), (weights_b, metrics_b) = a, b
    assert metrics_a == metrics_b, {k: (v, metrics_b.get(k)) for k, v in metrics_a.items() if v != metrics_b.get(k)}
    assert weights_a.keys() == weights_b.keys()
    different = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not different, f"weights differ: {different[:5]}"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The first run of the config: it pretrains the decoder and fits the store."""
    workdir = tmp_path_factory.mktemp("repro")
    shutil.copy(DATA / "repro.yaml", workdir / "repro.yaml")
    result = train(workdir, "first")
    assert (workdir / "data/stores").exists()
    return workdir, result


@pytest.mark.slow
def test_a_run_that_reuses_the_store_gives_the_same_model(first_run):
    workdir, first = first_run
    assert "test/acc" in first[1]
    assert_same_run(first, train(workdir, "reused"))


@pytest.mark.slow
def test_threads_and_loader_workers_do_not_change_the_model(first_run):
    workdir, first = first_run
    assert_same_run(first, train(workdir, "other-threads", "--data.num_workers", "2", threads=1))


@pytest.mark.slow
def test_another_seed_gives_another_model_from_the_same_store(first_run):
    workdir, first = first_run
    stores = sorted((workdir / "data/stores").iterdir())
    weights, _ = train(workdir, "seed1", "--seed_everything", "1")
    assert sorted((workdir / "data/stores").iterdir()) == stores  # the representation seed is data.seed
    assert any(not torch.equal(weights[k], first[0][k]) for k in weights)


@pytest.mark.slow
def test_a_killed_training_resumed_from_its_last_checkpoint_gives_the_same_model(first_run):
    """A run stopped after epoch 1 (as a kill at the epoch boundary leaves it), resumed with --ckpt_path
    last.ckpt, ends with the uninterrupted run's tested weights and metrics."""
    workdir, first = first_run
    train(workdir, "stopped", "--trainer.max_epochs", "1")
    (last,) = (workdir / "stopped").glob("repro/version_*/checkpoints/last.ckpt")
    assert_same_run(first, train(workdir, "resumed", "--ckpt_path", str(last)))


def test_derived_seeds_are_stable_and_separate_purposes():
    assert derive_seed(0, "augment", 3, 1, 0) == derive_seed(0, "augment", 3, 1, 0)
    assert len({derive_seed(0, "augment", 0, 0, 0), derive_seed(0, "model", 0, 0, 0), derive_seed(1, "augment", 0, 0, 0),
                derive_seed(0, "augment", 0, 1, 0), derive_seed(0, "augment", 1, 0, 0)}) == 5
    assert item_seed(0, "train", 5) == derive_seed(0, "train", 5)  # stores fitted before stay valid


def test_run_seed_follows_seed_everything(monkeypatch):
    from lightning.pytorch import seed_everything

    seed_everything(123)
    assert run_seed() == 123
    assert run_seed(7) == 7
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert run_seed() == 0


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    from arc.data.module import EpochShuffle

    sampler = EpochShuffle(50, seed=3)
    first = list(sampler)
    torch.rand(100)  # the global generator is not read
    assert list(sampler) == first and sorted(first) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(EpochShuffle(50, seed=4)) != first


def test_training_step_does_not_read_the_global_generator():
    from test_classifier import backbone, batch_of, tiny

    model = tiny(augment={"mask": 0.3, "push": 1.0, "arcmix": 1.0}, backbone=backbone(drop_path=0.3))
    model.set_latent_stats(torch.zeros(model.latent_dim), torch.ones(model.latent_dim))
    model.train()
    batch = batch_of([10, 12, 9, 20])
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        losses.append(model.training_step(batch, 0))
        after = torch.rand(1)
    assert torch.equal(losses[0], losses[1])
    torch.manual_seed(2)
    assert torch.equal(torch.rand(1), after)  # and leaves it as it found it
    assert not torch.equal(model.training_step(batch, 1), losses[0])  # another batch index, other draws


def test_each_augmentation_draws_from_its_own_generator():
    from arc.augment import build_augmentations
    from test_classifier import batch_of

    batch = batch_of([10, 12, 9, 20])
    masked = build_augmentations({"mask": 0.3})(batch, seed=5)
    with_noise = build_augmentations({"mask": 0.3, "noise": 0.1})(batch, seed=5)
    assert torch.equal(masked.pos, with_noise.pos)  # switching noise on leaves the mask draws alone
    assert not torch.equal(masked.lat, with_noise.lat)
    assert not torch.equal(build_augmentations({"mask": 0.3})(batch, seed=6).pos, masked.pos)


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL's strict reproducibility mode")
def test_matmuls_do_not_depend_on_the_thread_count():
    """arc sets MKL_CBWR=AUTO,STRICT on import: small GEMMs otherwise change bits with the thread count."""
    assert os.environ.get("MKL_CBWR") == "AUTO,STRICT"
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 10, generator=g), torch.randn(64, 64, generator=g)
    threads = torch.get_num_threads()
    try:
        products = []
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            products.append(a.t() @ b)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(p, products[0]) for p in products)


@pytest.mark.slow
def test_deterministic_trainer_runs(first_run):
    """``--trainer.deterministic true`` (torch.use_deterministic_algorithms) accepts every op of a run and is
    reproducible itself (its CPU kernels may round differently from the default ones)."""
    workdir, _ = first_run
    assert_same_run(train(workdir, "deterministic", "--trainer.deterministic", "true"),
                    train(workdir, "deterministic-again", "--trainer.deterministic", "true"))
