"""The INR weight store: resumable by shard, keyed by settings, refusing other settings, checksummed
(the cloud store's integrity checks), a damaged shard refitted."""
import json
import struct

import pytest
import torch

from arc.baselines import INRConfig, INRFitConfig
from arc.baselines.weight_store import (
    WeightStore,
    default_weight_store_dir,
    fit_weight_store,
    store_settings,
    weight_store_key,
)
from arc.data.images import ImageReadError
from arc.store import StoreError, integrity

INR = INRConfig(hidden=(8, 8))
FIT = INRFitConfig(steps=5)


@pytest.fixture(autouse=True)
def _fresh_verification_cache(monkeypatch):
    monkeypatch.setattr(integrity, "_VERIFIED", {})  # each test's damage is seen whatever ran before


def _damage_weights(path) -> None:
    """Overwrite the first bytes of the ``weights`` tensor's data in place (header untouched)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    begin, _ = json.loads(raw[8 : 8 + length])["weights"]["data_offsets"]
    with open(path, "r+b") as handle:
        handle.seek(8 + length + begin)
        handle.write(bytes(16))


class Split:
    """Seven 6x6 images; image 4 cannot be read; counts reads."""

    def __init__(self):
        self.images = torch.rand(7, 1, 6, 6, generator=torch.Generator().manual_seed(0))
        self.reads = 0

    def __len__(self):
        return 7

    def __getitem__(self, i):
        self.reads += 1
        if i == 4:
            raise ImageReadError("image 4 is broken")
        return self.images[i], i % 3


def test_store_resumes_without_refitting_finished_shards(tmp_path):
    split = Split()
    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    assert fit_weight_store(store, "train", split, INR, FIT) == 3
    first = store.collect("train")
    assert store.counts == {"train": 6} and first["index"].tolist() == [0, 1, 2, 3, 5, 6]
    assert store.shard_path("train", 0).stat().st_mode & 0o777 == 0o644  # readable by a team, as the cloud store's
    assert first["weights"].shape == (6, INR.param_count(1)) and first["label"].tolist() == [0, 1, 2, 0, 2, 0]
    assert store.manifest["skipped"] == {"train": [4]}

    again = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    split.reads = 0
    assert fit_weight_store(again, "train", split, INR, FIT) == 0 and split.reads == 0
    store.shard_path("train", 1).unlink()  # a run killed before shard 1 was written
    assert fit_weight_store(again, "train", split, INR, FIT) == 1 and split.reads == 3
    for name, value in again.collect("train").items():
        torch.testing.assert_close(value, first[name])
    assert store_settings(again.manifest) == (INR, FIT.key_settings())


def test_a_changed_setting_gives_a_new_key_and_is_refused_in_place(tmp_path):
    key = weight_store_key("src", INR, FIT, 3)
    assert weight_store_key("src", INR, INRFitConfig(steps=5, pixel_budget=10), 3) == key  # memory only
    others = [
        weight_store_key("other", INR, FIT, 3),
        weight_store_key("src", INRConfig(hidden=(8, 8), omega0=20.0), FIT, 3),
        weight_store_key("src", INRConfig(kind="relu", hidden=(8, 8)), FIT, 3),
        weight_store_key("src", INR, INRFitConfig(steps=6), 3),
        weight_store_key("src", INR, INRFitConfig(steps=5, init="shared"), 3),
        weight_store_key("src", INR, FIT, 4),
    ]
    assert len({key, *others}) == len(others) + 1
    assert default_weight_store_dir("root", "npz:a/b.npz", key).as_posix() == f"root/weights/b-{key}"
    WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    with pytest.raises(StoreError, match="differing: fit"):
        WeightStore.create_or_open(tmp_path / "w", "src", INR, INRFitConfig(steps=6), channels=1, shard_size=3)
    with pytest.raises(StoreError, match="differing: inr, param_count"):
        WeightStore.create_or_open(tmp_path / "w", "src", INRConfig(hidden=(4, 4)), FIT, channels=1, shard_size=3)


def test_foreign_and_unfinished_reads_say_what_to_do_and_a_foreign_shard_is_refitted(tmp_path):
    store = WeightStore.create_or_open(tmp_path / "a", "src", INR, FIT, channels=1, shard_size=3)
    other_fit = INRFitConfig(steps=6)
    other = WeightStore.create_or_open(tmp_path / "b", "src", INR, other_fit, channels=1, shard_size=3)
    with pytest.raises(StoreError, match="not fitted yet"):
        store.collect("train")
    fit_weight_store(other, "train", Split(), INR, other_fit)
    store.shard_path("train", 0).parent.mkdir(parents=True)
    store.shard_path("train", 0).write_bytes(other.shard_path("train", 0).read_bytes())
    with pytest.raises(StoreError, match="foreign .*run the baseline again: it refits"):
        store.read_shard("train", 0)
    split = Split()
    assert fit_weight_store(store, "train", split, INR, FIT) == 3 and store.read_shard("train", 0)[0]["index"].tolist() == [0, 1, 2]
    with pytest.raises(StoreError, match="refusing to write"):
        store.write_shard("train", 1, {"weights": torch.zeros(2, 3), "label": torch.zeros(2), "index": torch.zeros(2),
                                       "psnr": torch.zeros(2)}, [])


def test_checksums_are_recorded_a_damaged_shard_is_named_and_refitted_alone(tmp_path):
    split = Split()
    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    fit_weight_store(store, "train", split, INR, FIT)
    first = store.collect("train")
    recorded = store.manifest["checksums"]["train"]
    assert sorted(recorded) == ["0", "1", "2"] and all(len(value) == 64 for value in recorded.values())
    shard = store.shard_path("train", 1)
    _damage_weights(shard)
    with pytest.raises(StoreError, match=f"{shard}: damaged shard .*refits a damaged shard"):
        WeightStore.open(store.path).collect("train")
    mtimes = {k: store.shard_path("train", k).stat().st_mtime_ns for k in (0, 2)}
    split.reads = 0
    assert fit_weight_store(store, "train", split, INR, FIT) == 1 and split.reads == 3  # only shard 1 (3 indices)
    assert {k: store.shard_path("train", k).stat().st_mtime_ns for k in (0, 2)} == mtimes
    for name, value in WeightStore.open(store.path).collect("train").items():
        torch.testing.assert_close(value, first[name])  # the refit is the same deterministic fit
    assert store.manifest["checksums"]["train"] == recorded


def test_a_shard_replaced_after_its_split_was_recorded_is_noticed(tmp_path):
    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    fit_weight_store(store, "train", Split(), INR, FIT)
    tensors, skipped = store.read_shard("train", 0)
    tensors["label"] = tensors["label"] + 1  # a consistent shard, with its own checksum, but not the recorded one
    store.write_shard("train", 0, tensors, skipped)
    with pytest.raises(StoreError, match="shard replaced since its split was recorded.*run the baseline again to record it"):
        WeightStore.open(store.path).collect("train")


def test_the_manifest_records_the_fit_summary(tmp_path):
    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    assert store.fit_metrics() == {"repr/params_per_sample": INR.param_count(1)}
    fit_weight_store(store, "train", Split(), INR, FIT)
    stats = store.manifest["fit_stats"]["train"]
    assert stats["images"] == 6 and stats["fit_seconds"] > 0
    assert stats["psnr_mean"] == pytest.approx(float(store.collect("train")["psnr"].double().mean()))
    metrics = WeightStore.open(store.path).fit_metrics()
    assert metrics["fit/psnr_mean"] == pytest.approx(stats["psnr_mean"])
    assert metrics["fit/images_per_s"] == pytest.approx(6 / stats["fit_seconds"])


def test_shards_from_before_checksums_get_theirs_recorded(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    fit_weight_store(store, "train", Split(), INR, FIT)
    path = store.shard_path("train", 0)
    with safe_open(str(path), framework="pt") as handle:
        tensors, header = {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata())
    save_file(tensors, str(path), metadata={k: v for k, v in header.items() if k not in ("checksum", "fit_seconds")})
    legacy = WeightStore.open(store.path)
    legacy.manifest.pop("checksums")
    assert fit_weight_store(legacy, "train", Split(), INR, FIT) == 0  # resumes, nothing refitted, records the content hash
    assert legacy.manifest["checksums"]["train"] == store.manifest["checksums"]["train"]
    assert legacy.manifest["fit_stats"]["train"]["fit_seconds"] is None and "fit/images_per_s" not in legacy.fit_metrics()
    _damage_weights(path)
    with pytest.raises(StoreError, match="damaged shard"):
        legacy.collect("train")


def test_arc_store_verify_checks_a_weight_store_and_repair_lets_a_run_refit(tmp_path, capsys):
    from arc.store.verify import main as store_main

    split = Split()
    store = WeightStore.create_or_open(tmp_path / "w", "src", INR, FIT, channels=1, shard_size=3)
    fit_weight_store(store, "train", split, INR, FIT)
    assert store_main(["verify", str(store.path)]) == 0
    assert "weight store, 3 shards checked, 0 problems" in capsys.readouterr().out
    _damage_weights(store.shard_path("train", 2))
    assert store_main(["verify", str(store.path)]) == 1
    assert f"{store.shard_path('train', 2)}: damaged shard" in capsys.readouterr().out
    assert store_main(["verify", str(store.path), "--repair"]) == 1
    assert "un-recorded train" in capsys.readouterr().out and not store.shard_path("train", 2).exists()
    again = WeightStore.open(store.path)
    assert again.counts == {} and fit_weight_store(again, "train", split, INR, FIT) == 1
    assert store_main(["verify", str(store.path)]) == 0
    assert store_main(["verify", str(tmp_path)]) == 2 and "not a cloud store" in capsys.readouterr().err
