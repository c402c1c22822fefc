"""The INR weight store: resumable by shard, keyed by settings, refusing other settings."""
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
from arc.store import StoreError

INR = INRConfig(hidden=(8, 8))
FIT = INRFitConfig(steps=5)


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


def test_foreign_and_unfinished_reads_say_what_to_do(tmp_path):
    store = WeightStore.create_or_open(tmp_path / "a", "src", INR, FIT, channels=1, shard_size=3)
    other = WeightStore.create_or_open(tmp_path / "b", "src", INR, INRFitConfig(steps=6), channels=1, shard_size=3)
    with pytest.raises(StoreError, match="not fitted yet"):
        store.collect("train")
    fit_weight_store(other, "train", Split(), INR, other_fit := INRFitConfig(steps=6))
    store.shard_path("train", 0).parent.mkdir(parents=True)
    store.shard_path("train", 0).write_bytes(other.shard_path("train", 0).read_bytes())
    with pytest.raises(StoreError, match="foreign"):
        store.has_shard("train", 0)
    with pytest.raises(StoreError, match="refusing to write"):
        store.write_shard("train", 1, {"weights": torch.zeros(2, 3), "label": torch.zeros(2), "index": torch.zeros(2),
                                       "psnr": torch.zeros(2)}, [])
    assert other_fit.steps == 6
