"""Image size limits: a too large image is downscaled (counted, one line per split), the limit is part
of the source identity only when it changes images, and fitting logs a memory estimate first."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from arc.data.sources import SourceError, open_source
from arc.data.sources.image_split import downscale
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.pipeline import anchor_stage, fitting_memory, open_store, pretrain_stage

FIELD = FieldConfig(latent_dim=8, neighbours=4, latents_per_pixel=0.1)


def _folder(tmp_path, large: tuple[int, int] | None = None):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for label in ("a", "b"):
            folder = tmp_path / "tree" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (10, 12), dtype=np.uint8)).save(folder / f"{i}.png")
    if large is not None:
        Image.fromarray(rng.integers(0, 255, large, dtype=np.uint8)).save(tmp_path / "tree" / "test" / "b" / "big.png")
    return f"imagefolder:{tmp_path / 'tree'}"


def test_downscale_keeps_the_aspect_and_stays_within_the_limit():
    image = torch.rand(3, 3000, 4000)
    small = downscale(image, 1024 * 1024)
    assert small.shape[0] == 3 and small.shape[1] * small.shape[2] <= 1024 * 1024
    assert abs(small.shape[2] / small.shape[1] - 4 / 3) < 0.01 and small.shape[1] * small.shape[2] > 0.99 * 1024 * 1024
    assert 0 <= float(small.min()) and float(small.max()) <= 1


def test_the_limit_is_part_of_the_identity_only_when_it_changes_images(tmp_path):
    assert open_source("digits", size=16).identity["options"] == {"size": 16}  # existing stores keep their keys
    assert "max_pixels" not in open_source("shapes", size=12, max_pixels=144).identity["options"]
    assert open_source("shapes", size=12, max_pixels=100).identity["options"]["max_pixels"] == 100
    small = open_source(_folder(tmp_path / "small"))
    assert "max_pixels" not in small.identity["options"] and small.largest_pixels == 120
    large = open_source(_folder(tmp_path / "large", large=(60, 80)), max_pixels=1200)
    assert large.identity["options"]["max_pixels"] == 1200 and large.largest_pixels == 1200
    assert "max_pixels" not in open_source(_folder(tmp_path / "large", large=(60, 80)), max_pixels=None).identity["options"]
    with pytest.raises(SourceError, match="max_pixels must be a positive integer"):
        open_source("shapes", max_pixels=0)


def test_a_large_image_in_an_image_folder_is_downscaled_with_one_counted_line(tmp_path, caplog):
    source = open_source(_folder(tmp_path, large=(60, 80)), val_fraction=0.2, max_pixels=1200)
    fit = FitConfig(steps=4, pixel_budget=4096)
    decoder = pretrain_stage(source, FIELD, PretrainConfig(images=4, steps=5), tmp_path / "decoder.safetensors")
    with caplog.at_level(logging.INFO, logger="arc.pipeline"):
        store = anchor_stage(source, FIELD, fit, open_store(source, FIELD, fit, decoder, tmp_path / "stores"))
    lines = [record.getMessage() for record in caplog.records if "downscaled" in record.getMessage()]
    assert lines == ["test: downscaled 1 images to at most 1200 pixels (source option max_pixels)"]
    assert store.counts["test"] == 7
    estimates = [record.getMessage() for record in caplog.records if "fitting memory about" in record.getMessage()]
    assert estimates and all("images of up to 1200 pixels" in line for line in estimates)


def test_the_memory_estimate_follows_the_pixel_tables():
    fit = FitConfig(pixel_budget=4_000_000, pixel_fraction=0.25)
    assert fitting_memory(784, 1024, fit, 1) == 104 * 784 * 1024  # a shard of small images is one group
    assert fitting_memory(1024 * 1024, 1024, fit, 2) == 104 * 16_000_000 * 2  # groups bounded by the budget
    assert fitting_memory(12_000_000 * 2, 1024, fit, 1) == 104 * 24_000_000  # one image larger than a group
