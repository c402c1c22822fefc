"""The representation stages chained: pretrain -> anchor -> store, resume, keys, skips and DDP ranks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from arc.data.clouds import CloudDataset
from arc.data.sources import SPLITS, open_source
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.pipeline import anchor_stage, default_decoder_path, open_store, pretrain_stage
from arc.store import CloudStore

FIELD = FieldConfig(latent_dim=8, neighbours=4, latents_per_pixel=0.1)
PRETRAIN = PretrainConfig(images=6, steps=15)
FIT = FitConfig(steps=12, pixel_budget=4096)
SHAPES = {"size": 12, "count": {"train": 10, "val": 4, "test": 5}}


def _stages(tmp: Path, fit: FitConfig = FIT, shard_size: int = 4) -> CloudStore:
    source = open_source("shapes", **SHAPES)
    decoder = pretrain_stage(source, FIELD, PRETRAIN, default_decoder_path(source, FIELD, PRETRAIN, tmp))
    store = open_store(source, FIELD, fit, decoder, tmp, shard_size=shard_size)
    return anchor_stage(source, FIELD, fit, store)


def _all(store: CloudStore, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = CloudDataset(store, split)
    items = [data[i] for i in range(len(data))]
    return torch.cat([c.lat for c in items]), torch.cat([c.pos for c in items])


def test_stages_fill_every_split_and_statistics_come_from_train(tmp_path):
    store = _stages(tmp_path)
    assert store.is_complete and store.counts == {"train": 10, "val": 4, "test": 5}
    lat, _ = _all(store, "train")
    torch.testing.assert_close(store.latent_mean, lat.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(store.latent_std, lat.std(0), rtol=1e-4, atol=1e-6)
    psnr = CloudDataset(store, "test").psnr
    assert bool((psnr > 5).all()), psnr


def test_a_moved_data_root_still_finds_the_store_decoder_from_any_directory(tmp_path, monkeypatch):
    import shutil

    from arc.pipeline import store_decoder

    store = _stages(tmp_path / "data")
    assert not Path(store.decoder_path).is_absolute()  # recorded relative to the store
    shutil.move(tmp_path / "data", tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved" / "stores")
    moved = CloudStore.open(tmp_path / "moved" / "stores" / store.path.name)
    assert store_decoder(moved).latent_dim == FIELD.latent_dim


def test_second_run_reuses_decoder_and_store_and_resumes_a_lost_shard(tmp_path):
    store = _stages(tmp_path)
    kept = store.shard_path("train", 0)
    lost = store.shard_path("train", 1)
    before = _all(store, "train")
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    manifest = store.path / "manifest.json"  # as a run killed before recording its splits leaves it
    fields = json.loads(manifest.read_text())
    fields.update(status="incomplete", counts={}, skipped={}, latent_mean=None, latent_std=None)
    manifest.write_text(json.dumps(fields))
    again = _stages(tmp_path)
    assert again.path == store.path
    assert kept.stat().st_mtime_ns == mtime, "a finished shard was rewritten"
    after = _all(again, "train")
    torch.testing.assert_close(after[0], before[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after[1], before[1])


def test_changed_fit_settings_make_a_new_store_but_pixel_budget_does_not(tmp_path):
    store = _stages(tmp_path)
    other = _stages(tmp_path, FitConfig(steps=13, pixel_budget=4096))
    assert other.path != store.path and store.is_complete
    same = _stages(tmp_path, FitConfig(steps=12, pixel_budget=1000))
    assert same.path == store.path


def test_fit_init_patch_makes_its_own_store_keyed_by_the_map_and_needs_a_decoder_with_one(tmp_path):
    from arc.field.decoder import load_decoder, save_decoder
    from arc.field.errors import FieldInputError

    uniform = _stages(tmp_path)
    patch = _stages(tmp_path, FitConfig(steps=12, pixel_budget=4096, init="patch"))
    decoder, _ = load_decoder(uniform.decoder_path if Path(uniform.decoder_path).is_absolute()
                              else uniform.path / uniform.decoder_path)
    assert patch.path != uniform.path and patch.decoder_hash == uniform.decoder_hash
    assert patch.manifest["fit"]["init"] == "patch" and "init" not in uniform.manifest["fit"]
    assert patch.manifest["fit"]["init_hash"] == decoder.latent_start.hash()
    assert CloudDataset(patch, "test").psnr.mean() > CloudDataset(uniform, "test").psnr.mean()
    decoder.latent_start = None  # a decoder pretrained before the map existed
    save_decoder(tmp_path / "old.safetensors", decoder)
    with pytest.raises(FieldInputError, match="carries none"):
        open_store(open_source("shapes", **SHAPES), FIELD, FitConfig(init="patch"), tmp_path / "old.safetensors", tmp_path)


def test_unreadable_images_are_counted_skips(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for label in ("a", "b"):
            folder = tmp_path / "tree" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "tree" / "test" / "a" / "0.png").write_bytes(b"not a png")
    source = open_source(f"imagefolder:{tmp_path / 'tree'}", val_fraction=0.2)
    decoder = pretrain_stage(source, FIELD, PRETRAIN, tmp_path / "decoder.safetensors")
    store = anchor_stage(source, FIELD, FIT, open_store(source, FIELD, FIT, decoder, tmp_path / "stores"))
    assert len(store.skipped["test"]) == 1
    assert store.counts["test"] == 5


def _rank_main(rank: int, world_size: int, tmp: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    source = open_source("shapes", **SHAPES)
    path = default_decoder_path(source, FIELD, PRETRAIN, tmp)
    if rank == 0:
        pretrain_stage(source, FIELD, PRETRAIN, path)
    dist.barrier()
    store = open_store(source, FIELD, FIT, path, Path(tmp) / "ddp", shard_size=4)  # both ranks at once
    anchor_stage(source, FIELD, FIT, store, rank=rank, world_size=world_size, barrier=dist.barrier)
    dist.destroy_process_group()


def test_two_ranks_fit_disjoint_shards_and_match_one_process(tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_rank_main, args=(2, str(tmp_path), port), nprocs=2, join=True)
    ddp_root = tmp_path / "ddp"
    (ddp_store,) = [CloudStore.open(p) for p in (ddp_root / "stores").iterdir()]
    assert ddp_store.is_complete and ddp_store.counts == {"train": 10, "val": 4, "test": 5}
    single = _stages(tmp_path)
    for split in ("train", "test"):
        torch.testing.assert_close(_all(ddp_store, split)[0], _all(single, split)[0], rtol=1e-5, atol=1e-6)


def test_store_refuses_a_foreign_decoder(tmp_path):
    store = _stages(tmp_path)
    other_pretrain = PretrainConfig(images=6, steps=16)
    source = open_source("shapes", **SHAPES)
    other = pretrain_stage(source, FIELD, other_pretrain, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="other settings"):
        open_store(source, FIELD, FIT, other, tmp_path, path=store.path, shard_size=4)


def test_images_with_fewer_pixels_than_neighbours_are_counted_skips(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        folder = tmp_path / "tree" / "train" / label
        folder.mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (2, 2), dtype=np.uint8)).save(tmp_path / "tree" / "train" / "a" / "tiny.png")
    field = FieldConfig(latent_dim=4, neighbours=5, latents_per_pixel=0.1)
    source = open_source(f"imagefolder:{tmp_path / 'tree'}", val_fraction=0.2, test_fraction=0.2)
    tiny = [s for s in ("train", "val", "test") for i in range(len(source.split(s)))
            if source.split(s)[i][0].shape[1] == 2]
    decoder = pretrain_stage(source, field, PretrainConfig(images=3, steps=5), tmp_path / "d.safetensors")
    store = anchor_stage(source, field, FIT, open_store(source, field, FIT, decoder, tmp_path / "stores"))
    assert [len(store.skipped[s]) for s in ("train", "val", "test")].count(1) == 1
    assert sum(store.counts.values()) == 10 and len(tiny) == 1


def test_anchoring_refuses_a_decoder_file_swapped_under_the_store(tmp_path):
    source = open_source("shapes", **SHAPES)
    path = pretrain_stage(source, FIELD, PRETRAIN, tmp_path / "decoder.safetensors")
    store = open_store(source, FIELD, FIT, path, tmp_path, shard_size=4)
    pretrain_stage(source, FIELD, PretrainConfig(images=6, steps=3), tmp_path / "other.safetensors").replace(path)
    with pytest.raises(ValueError, match="is not the decoder the store"):
        anchor_stage(source, FIELD, FIT, store)


def test_anchoring_only_the_requested_splits_then_the_rest(tmp_path):
    source = open_source("shapes", **SHAPES)
    decoder = pretrain_stage(source, FIELD, PRETRAIN, tmp_path / "decoder.safetensors")
    store = anchor_stage(source, FIELD, FIT, open_store(source, FIELD, FIT, decoder, tmp_path, shard_size=4), ("test",))
    assert store.counts == {"test": 5} and not store.is_complete and not store.has_statistics
    assert not (store.path / "train").exists()
    test_shard = store.shard_path("test", 0)
    mtime = test_shard.stat().st_mtime_ns
    store = anchor_stage(source, FIELD, FIT, store)
    assert store.is_complete and store.counts == {"test": 5, "train": 10, "val": 4}
    assert test_shard.stat().st_mtime_ns == mtime, "a recorded split was refitted"
    lat, _ = _all(store, "train")
    torch.testing.assert_close(store.latent_mean, lat.mean(0), rtol=1e-4, atol=1e-6)
    full = _stages(tmp_path / "full")
    torch.testing.assert_close(_all(store, "test")[0], _all(full, "test")[0])


def test_concurrent_shard_workers_write_the_same_store(tmp_path):
    source = open_source("shapes", **SHAPES)
    decoder = pretrain_stage(source, FIELD, PRETRAIN, tmp_path / "decoder.safetensors")
    threads = torch.get_num_threads()
    stores = [anchor_stage(source, FIELD, FIT, open_store(source, FIELD, FIT, decoder, tmp_path / str(w), shard_size=3),
                           shard_workers=w) for w in (1, 3)]
    assert torch.get_num_threads() == threads
    assert stores[1].counts == stores[0].counts == {"train": 10, "val": 4, "test": 5}
    for split in SPLITS:
        for k in range(stores[0].num_shards(split)):
            a, b = stores[0].read_shard(split, k)[0], stores[1].read_shard(split, k)[0]
            assert torch.equal(a.lat, b.lat) and torch.equal(a.pos, b.pos) and torch.equal(a.index, b.index)
