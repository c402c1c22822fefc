"""The sharded cloud store: round trip, atomic writes, resume, validation, statistics, dataset."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

import arc.store.layout as layout_module
from arc.cloud import CloudBatch
from arc.data.clouds import CloudDataset, collate_clouds
from arc.files import atomic_write
from arc.store import (
    CloudStore,
    StoreError,
    decoder_key,
    default_store_dir,
    latent_statistics,
    store_key,
)

Z, C = 4, 3
SOURCE = {"source": "digits", "options": {"size": 16}, "content": None}
FIELD = {"latent_dim": Z, "neighbours": 4, "latents_per_pixel": 0.05, "latent_count": None, "colour": "standardise"}
FIT = {"steps": 10, "lr": 5e-3}


def _fields(decoder_hash: str = "dec-a", **changes) -> dict:
    fields = dict(source=SOURCE, field=FIELD, fit=FIT, spacing=4.47, decoder_hash=decoder_hash, decoder_path="d.safetensors", shard_size=4)
    fields.update(changes)
    return fields


def _clouds(indices: list[int], seed: int = 0) -> CloudBatch:
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, 7, (len(indices),), generator=generator)
    n = int(counts.sum())
    return CloudBatch(
        pos=torch.rand(n, 2, generator=generator) * 16,
        lat=torch.randn(n, Z, generator=generator),
        offset=torch.cumsum(counts, 0),
        label=torch.tensor([i % 3 for i in indices]),
        size=torch.tensor([[16, 16]] * len(indices)),
        index=torch.tensor(indices),
        colour_mean=torch.rand(len(indices), C, generator=generator),
        colour_std=torch.rand(len(indices), C, generator=generator) + 0.5,
    )


def _assert_same(a: CloudBatch, b: CloudBatch) -> None:
    for name in ("pos", "lat", "offset", "label", "size", "index", "colour_mean", "colour_std"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _filled(tmp_path, skip=(5,)) -> tuple[CloudStore, dict[int, CloudBatch]]:
    """A store with 10 train images in 3 shards of 4 (index 5 skipped) and 3 val images."""
    store = CloudStore.create_or_open(tmp_path / "store", _fields())
    written = {}
    for k in range(3):
        indices = [i for i in range(4 * k, min(4 * k + 4, 10)) if i not in skip]
        written[k] = _clouds(indices, seed=k)
        store.write_shard("train", k, written[k], torch.rand(len(indices)) * 40, skipped=[i for i in skip if 4 * k <= i < 4 * k + 4])
    store.write_shard("val", 0, _clouds([0, 1, 2], seed=9), torch.full((3,), 30.0))
    return store, written


def test_round_trip_and_layout(tmp_path):
    store = CloudStore.create_or_open(tmp_path / "s", _fields())
    clouds, psnr = _clouds([4, 6, 7]), torch.tensor([31.0, 32.5, 28.25])
    path = store.write_shard("train", 1, clouds, psnr, skipped=[5])
    assert path == tmp_path / "s" / "train" / "shard-00001.safetensors" == store.shard_path("train", 1)
    back, back_psnr = store.read_shard("train", 1)
    _assert_same(back, clouds)
    assert torch.equal(back_psnr, psnr)
    assert store.shard_skipped("train", 1) == [5] and store.collect("train") == (3, [5])
    assert store.num_shards("train", 9) == 3 and store.shard_range(2) == (8, 12)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["shard_size"] == 4 and manifest["spacing"] == 4.47
    assert manifest["decoder_hash"] == "dec-a" and manifest["key"] == store.key


def test_write_refuses_bad_input(tmp_path):
    store = CloudStore.create_or_open(tmp_path / "s", _fields())
    with pytest.raises(StoreError, match=r"within \[4, 8\)"):
        store.write_shard("train", 1, _clouds([3, 4]), torch.zeros(2))
    with pytest.raises(StoreError, match="ascending"):
        store.write_shard("train", 1, _clouds([5, 4]), torch.zeros(2))
    with pytest.raises(StoreError, match="PSNR"):
        store.write_shard("train", 1, _clouds([4, 5]), torch.zeros(3))
    with pytest.raises(StoreError, match="both stored and skipped"):
        store.write_shard("train", 1, _clouds([4, 5]), torch.zeros(2), skipped=[5])
    bad = _clouds([4])
    bad.lat = torch.randn(bad.num_points, Z + 1)
    with pytest.raises(StoreError, match="dims"):
        store.write_shard("train", 1, bad, torch.zeros(1))
    assert store.shard_numbers("train") == []


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = CloudStore.create_or_open(tmp_path / "s", _fields())

    def half_then_crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 100)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(layout_module, "save_file", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard("train", 0, _clouds([0, 1]), torch.zeros(2))
    assert os.listdir(tmp_path / "s" / "train") == []
    assert not store.has_shard("train", 0)


def test_resume_truncated_and_corrupt_shards(tmp_path):
    store, _ = _filled(tmp_path)
    reopened = CloudStore.create_or_open(tmp_path / "store", _fields(decoder_path="moved.safetensors"))
    assert [reopened.has_shard("train", k) for k in range(4)] == [True, True, True, False]
    assert CloudStore.open(store.path).manifest["decoder_path"] == "moved.safetensors"
    path = reopened.shard_path("train", 1)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert not reopened.has_shard("train", 1)
    with pytest.raises(StoreError, match=r"shard-00001\.safetensors.*truncated or corrupt.*delete it"):
        reopened.read_shard("train", 1)
    path.write_bytes(b"garbage")
    assert not reopened.has_shard("train", 1)
    with pytest.raises(StoreError, match="delete it"):
        reopened.read_shard("train", 1)
    with pytest.raises(StoreError, match="already finished"):
        reopened.write_shard("train", 0, _clouds([0, 1]), torch.zeros(2))
    reopened.write_shard("train", 1, _clouds([4, 6, 7], seed=1), torch.zeros(3), skipped=[5])  # refit replaces it
    _assert_same(reopened.read_shard("train", 1)[0], _clouds([4, 6, 7], seed=1))
    with pytest.raises(StoreError, match="missing"):
        reopened.read_shard("train", 3)


def test_foreign_shards_are_refused(tmp_path):
    store, _ = _filled(tmp_path)
    other = CloudStore.create_or_open(tmp_path / "other", _fields(decoder_hash="dec-b"))
    other.shard_path("train", 0).parent.mkdir(parents=True)
    other.shard_path("train", 0).write_bytes(store.shard_path("train", 0).read_bytes())
    assert not other.has_shard("train", 0)
    with pytest.raises(StoreError, match="foreign shard.*decoder_hash 'dec-a'"):
        other.read_shard("train", 0)
    # a shard moved to another number or split of its own store
    store.shard_path("train", 3).write_bytes(store.shard_path("train", 0).read_bytes())
    with pytest.raises(StoreError, match="shard '0'"):
        store.read_shard("train", 3)
    store.shard_path("val", 2).write_bytes(store.shard_path("train", 2).read_bytes())
    with pytest.raises(StoreError, match="split 'train'"):
        store.read_shard("val", 2)


def test_settings_change_key_and_existing_store_is_never_overwritten(tmp_path):
    key = store_key(SOURCE, FIELD, FIT, "dec-a")
    assert key == store_key(dict(SOURCE), dict(FIELD), dict(FIT), "dec-a")
    assert len({key, store_key(SOURCE, {**FIELD, "latent_dim": 8}, FIT, "dec-a"), store_key(SOURCE, FIELD, {**FIT, "steps": 11}, "dec-a"),
                store_key(SOURCE, FIELD, FIT, "dec-b"), store_key({**SOURCE, "content": "x"}, FIELD, FIT, "dec-a")}) == 5
    assert decoder_key(SOURCE, FIELD, {"images": 100}) != decoder_key(SOURCE, FIELD, {"images": 50})
    assert default_store_dir("data", "torchvision:Imagenette", key) == default_store_dir("data", "torchvision:Imagenette", key)
    assert str(default_store_dir("data", "imagefolder:/x/my set/", key)).endswith(f"stores/my-set-{key}")
    store, _ = _filled(tmp_path)
    before = (store.path / "manifest.json").read_text()
    with pytest.raises(StoreError, match="other settings.*fit"):
        CloudStore.create_or_open(store.path, _fields(fit={**FIT, "steps": 11}))
    with pytest.raises(StoreError, match="decoder_hash"):
        CloudStore.create_or_open(store.path, _fields(decoder_hash="dec-b"))
    assert (store.path / "manifest.json").read_text() == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        CloudStore.create_or_open(tmp_path / "busy", _fields())


def test_latent_statistics_match_torch(tmp_path):
    store, written = _filled(tmp_path)
    everything = torch.cat([written[k].lat for k in sorted(written)]).double()
    mean, std = latent_statistics(store, "train")
    assert mean.shape == (Z,) and std.shape == (Z,)
    assert torch.allclose(mean.double(), everything.mean(0), atol=1e-6)
    assert torch.allclose(std.double(), everything.std(0), atol=1e-6)
    small_chunks = latent_statistics(store, "train", chunk_rows=3)
    assert torch.allclose(small_chunks[0], mean, atol=1e-6) and torch.allclose(small_chunks[1], std, atol=1e-6)


def test_finalize_checks_shards_and_records_results(tmp_path):
    store, _ = _filled(tmp_path)
    mean, std = latent_statistics(store)
    with pytest.raises(StoreError, match="record was told"):
        store.finalize({"train": 9, "val": 3}, {"train": []}, mean, std)
    with pytest.raises(StoreError, match="missing"):
        store.finalize({"train": 13, "val": 3}, {"train": [5]}, mean, std)
    assert not store.is_complete
    store.finalize({"train": 9, "val": 3}, {"train": [5]}, mean, std)
    reopened = CloudStore.open(store.path)
    assert reopened.is_complete and reopened.counts == {"train": 9, "val": 3}
    assert reopened.skipped == {"train": [5], "val": []} and reopened.num_shards("train") == 3
    assert torch.allclose(reopened.latent_mean, mean) and torch.allclose(reopened.latent_std, std)


def test_splits_are_recorded_one_at_a_time(tmp_path):
    store, _ = _filled(tmp_path)
    store.record({"val": 3}, {})
    reopened = CloudStore.open(store.path)
    assert reopened.has_split("val") and not reopened.has_split("train") and not reopened.is_complete
    assert len(CloudDataset(reopened, "val")) == 3 and not reopened.has_statistics
    with pytest.raises(StoreError, match="train split is not fitted"):
        reopened.latent_mean
    with pytest.raises(StoreError, match="needs the train latent statistics"):
        reopened.record({"train": 9}, {"train": [5]}, complete=True)
    mean, std = latent_statistics(reopened)
    reopened.record({"train": 9}, {"train": [5]}, mean, std, complete=True)
    again = CloudStore.open(store.path)
    assert again.is_complete and again.counts == {"val": 3, "train": 9} and again.skipped == {"val": [], "train": [5]}
    assert torch.equal(again.latent_mean, mean)


def test_cloud_dataset_and_collate(tmp_path):
    store, written = _filled(tmp_path)
    with pytest.raises(StoreError, match="not fitted yet"):
        CloudDataset(store, "train")
    store.finalize({"train": 9, "val": 3}, {"train": [5]}, *latent_statistics(store))
    dataset = CloudDataset(store.path, "train")
    everything = CloudBatch.concat([written[k] for k in sorted(written)])
    assert len(dataset) == 9 and dataset.indices.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert torch.equal(dataset.labels, everything.label)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=0, collate_fn=collate_clouds)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 1]
    joined = collate_clouds(batches)
    _assert_same(joined, everything)
    assert torch.equal(batches[1].offset, torch.cumsum(everything.counts()[4:8], 0))
    _assert_same(dataset[-1], everything.cloud(8))
    with pytest.raises(IndexError):
        dataset[9]
    store.finalize({"train": 9, "val": 3, "test": 0}, {"train": [5]}, store.latent_mean, store.latent_std)
    assert len(CloudDataset(store, "test")) == 0


def test_cloud_dataset_with_a_worker_process(tmp_path):
    store, written = _filled(tmp_path)
    store.finalize({"train": 9, "val": 3}, {"train": [5]}, *latent_statistics(store))
    dataset = CloudDataset(store, "val", cache_bytes=1)  # every shard over budget: read slice by slice
    dataset[0]  # reads in the parent before the worker starts
    loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_clouds)
    _assert_same(collate_clouds(list(loader)), _clouds([0, 1, 2], seed=9))


@pytest.mark.parametrize("cache_bytes", [1, 200, 1 << 20])
def test_shuffled_batches_keep_the_sampler_order(tmp_path, cache_bytes):
    """Batched gathering (__getitems__) across shards, with the cache holding all, some or none of them."""
    store, written = _filled(tmp_path)
    store.finalize({"train": 9, "val": 3}, {"train": [5]}, *latent_statistics(store))
    everything = CloudBatch.concat([written[k] for k in sorted(written)])
    dataset = CloudDataset(store, "train", cache_bytes=cache_bytes)
    loader = DataLoader(dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0), collate_fn=collate_clouds)
    seen = []
    for batch in loader:
        positions = [dataset.indices.tolist().index(int(i)) for i in batch.index]
        _assert_same(batch, everything.select(positions))
        seen += positions
    assert sorted(seen) == list(range(9)) and seen != sorted(seen)


def test_shard_of_only_skipped_images(tmp_path):
    store = CloudStore.create_or_open(tmp_path / "s", _fields())
    empty = _clouds([0]).select([])
    store.write_shard("test", 0, _clouds([0, 2]), torch.zeros(2), skipped=[1, 3])
    store.write_shard("test", 1, empty, torch.zeros(0), skipped=[4, 5])
    clouds, psnr = store.read_shard("test", 1)
    assert len(clouds) == 0 and clouds.lat.shape == (0, Z) and psnr.shape == (0,)
    assert store.collect("test") == (2, [1, 3, 4, 5])
    store.write_shard("train", 0, _clouds([0, 1, 2]), torch.zeros(3))
    store.finalize({"train": 3, "test": 2}, {"test": [1, 3, 4, 5]}, *latent_statistics(store))
    assert CloudDataset(store, "test").indices.tolist() == [0, 2]
    assert store.decoder_path == "d.safetensors"


def test_concurrent_creation_is_safe(tmp_path):
    """Two ranks creating one store: a leftover manifest temp file is not 'busy', and linking never overwrites."""
    path = tmp_path / "s"
    path.mkdir()
    (path / ".manifest.json.abc.tmp").write_text("{")  # another process half-way through creating it
    store = CloudStore.create_or_open(path, _fields())
    with pytest.raises(FileExistsError):
        atomic_write(path / "manifest.json", lambda tmp: open(tmp, "w").write("{}"), overwrite=False)
    assert CloudStore.open(path).key == store.key
    assert sorted(os.listdir(path)) == [".manifest.json.abc.tmp", "manifest.json"]


def test_items_do_not_alias_the_shard_cache(tmp_path):
    store, written = _filled(tmp_path)
    store.finalize({"train": 9, "val": 3}, {"train": [5]}, *latent_statistics(store))
    dataset = CloudDataset(store, "train")
    dataset[0].pos.add_(100.0)  # an in-place augmentation on a CPU batch
    collate_clouds([dataset[0]]).lat.zero_()
    _assert_same(dataset[0], written[0].cloud(0))


def test_atomic_writes_are_readable_by_others(tmp_path):
    from pathlib import Path

    from arc.files import atomic_write

    atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
