"""What a user's machine does to a store: damaged bytes, changed labels, deleted and truncated shards,
stores written before checksums; each is found (naming the shard), repaired and refitted."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from arc.data.clouds import CloudDataset
from arc.data.sources import open_source
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.pipeline import anchor_stage, default_decoder_path, open_store, pretrain_stage
from arc.store import CloudStore, StoreError
from arc.store import integrity
from arc.store.verify import main as store_main

FIELD = FieldConfig(latent_dim=8, neighbours=4, latents_per_pixel=0.1)
PRETRAIN = PretrainConfig(images=6, steps=15)
FIT = FitConfig(steps=12, pixel_budget=4096)
SHAPES = {"size": 12, "count": {"train": 10, "val": 4, "test": 5}}


def _anchor(tmp: Path) -> CloudStore:
    source = open_source("shapes", **SHAPES)
    decoder = pretrain_stage(source, FIELD, PRETRAIN, default_decoder_path(source, FIELD, PRETRAIN, tmp))
    return anchor_stage(source, FIELD, FIT, open_store(source, FIELD, FIT, decoder, tmp, shard_size=4))


@pytest.fixture(autouse=True)
def _fresh_verification_cache(monkeypatch):
    monkeypatch.setattr(integrity, "_VERIFIED", {})  # each test's damage is seen whatever ran before


def _mtimes(store: CloudStore) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(store.path.glob("*/shard-*.safetensors"))}


def _zero_latent_bytes(path: Path) -> None:
    """Overwrite the first bytes of the ``lat`` tensor's data with zeros, in place (header untouched)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + length])["lat"]["data_offsets"]
    with open(path, "r+b") as handle:
        handle.seek(8 + length + begin)
        handle.write(bytes(min(64, end - begin)))


def _rewrite(path: Path, change=None, drop_checksum: bool = False) -> None:
    """Write the shard again through safetensors with ``change(tensors)`` applied (header kept)."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = dict(handle.metadata())
    if change is not None:
        change(tensors)
    if drop_checksum:
        metadata.pop("checksum")
    save_file(tensors, str(path), metadata=metadata)


def _lat(store: CloudStore, split: str = "train") -> torch.Tensor:
    data = CloudDataset(store, split)
    return torch.cat([data[i].lat for i in range(len(data))])


def test_zeroed_latent_bytes_are_refused_naming_the_shard_and_resume_refits_only_it(tmp_path):
    store = _anchor(tmp_path)
    before, damaged = _lat(store), store.shard_path("train", 1)
    _zero_latent_bytes(damaged)
    with pytest.raises(StoreError, match="shard-00001.safetensors: damaged shard"):
        CloudDataset(CloudStore.open(store.path), "train")
    times = _mtimes(store)
    again = _anchor(tmp_path)
    changed = [path for path, mtime in _mtimes(again).items() if times[path] != mtime]
    assert changed == [damaged]
    torch.testing.assert_close(_lat(again), before)
    assert store_main(["verify", str(again.path)]) == 0


def test_changed_labels_are_found_by_verify_and_repair_lets_anchoring_refit_the_shard(tmp_path, capsys):
    store = _anchor(tmp_path)
    labels = CloudDataset(store, "train").labels.clone()
    shard = store.shard_path("train", 0)
    _rewrite(shard, lambda tensors: tensors["label"].add_(1))
    with pytest.raises(StoreError, match="shard-00000.safetensors"):
        CloudDataset(CloudStore.open(store.path), "train")
    capsys.readouterr()
    assert store_main(["verify", str(store.path)]) == 1
    assert "shard-00000.safetensors: damaged shard" in capsys.readouterr().out
    assert store_main(["verify", str(store.path), "--repair"]) == 1
    assert not shard.exists() and not CloudStore.open(store.path).has_split("train")
    again = _anchor(tmp_path)
    assert again.is_complete and torch.equal(CloudDataset(again, "train").labels, labels)
    assert store_main(["verify", str(again.path)]) == 0


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_deleted_or_truncated_shard_is_refitted_by_the_next_anchoring_run(tmp_path, damage):
    store = _anchor(tmp_path)
    before, lost = _lat(store), store.shard_path("val", 0)
    val = _lat(store, "val")
    if damage == "delete":
        lost.unlink()
        with pytest.raises(StoreError, match="0 clouds on disk, the manifest says 4; run anchoring again"):
            CloudDataset(CloudStore.open(store.path), "val")
    else:
        lost.write_bytes(lost.read_bytes()[: lost.stat().st_size // 2])
    assert store_main(["verify", str(store.path)]) == 1
    times = _mtimes(store)
    again = _anchor(tmp_path)
    assert [path for path, mtime in _mtimes(again).items() if times.get(path) != mtime] == [lost]
    assert again.is_complete and again.counts == {"train": 10, "val": 4, "test": 5}
    torch.testing.assert_close(_lat(again, "val"), val)
    torch.testing.assert_close(_lat(again), before)
    assert store_main(["verify", str(again.path)]) == 0


def test_verify_checks_the_statistics_and_repair_recomputes_them(tmp_path, capsys):
    store = _anchor(tmp_path)
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["latent_mean"] = [value + 1.0 for value in manifest["latent_mean"]]
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    assert store_main(["verify", str(store.path)]) == 1
    assert "latent mean/std are not those of the train shards" in capsys.readouterr().out
    assert store_main(["verify", str(store.path), "--repair"]) == 1
    assert store_main(["verify", str(store.path)]) == 0
    torch.testing.assert_close(CloudStore.open(store.path).latent_mean, store.latent_mean)


def test_a_store_written_before_checksums_opens_and_verify_repair_records_them(tmp_path, capsys):
    store = _anchor(tmp_path)
    before = _lat(store)
    for path in _mtimes(store):
        _rewrite(path, drop_checksum=True)
    manifest = json.loads((store.path / "manifest.json").read_text())
    del manifest["checksums"]
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    old = CloudStore.open(store.path)
    torch.testing.assert_close(_lat(old), before)  # read unverified, as before
    assert _anchor(tmp_path).is_complete  # resume keeps the shards
    assert store_main(["verify", str(store.path)]) == 0
    assert "shards without a checksum" in capsys.readouterr().out
    assert store_main(["verify", str(store.path), "--repair"]) == 0
    assert "recorded the checksums of 3 train shards" in capsys.readouterr().out
    assert store_main(["verify", str(store.path)]) == 0
    assert "without a checksum" not in capsys.readouterr().out
    _zero_latent_bytes(store.shard_path("train", 2))
    with pytest.raises(StoreError, match="shard-00002.safetensors: damaged shard"):
        CloudDataset(CloudStore.open(store.path), "train")


def test_verify_of_a_folder_that_is_no_store_exits_2(tmp_path, capsys):
    assert store_main(["verify", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_a_full_disk_is_one_line_keeps_the_finished_shards_and_the_next_run_resumes(tmp_path, monkeypatch):
    import errno

    from arc.store import layout

    whole = _lat(_anchor(tmp_path / "whole"))
    real, written = layout.save_file, []

    def fill_the_disk_after_two_shards(tensors, path, metadata=None):
        if len(written) == 2:
            Path(path).write_bytes(b"partial")  # what a full disk leaves in the temporary file
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(layout, "save_file", fill_the_disk_after_two_shards)
    with pytest.raises(StoreError, match="No space left on device; free space"):
        _anchor(tmp_path / "full")
    (store_dir,) = (tmp_path / "full" / "stores").iterdir()
    assert len(list(store_dir.glob("*/shard-*.safetensors"))) == 2 and not list(store_dir.rglob("*.tmp"))
    monkeypatch.setattr(layout, "save_file", real)
    assert torch.equal(_lat(_anchor(tmp_path / "full")), whole)
