"""ARCDataModule's test_canvas (paper Exp. 5): the test split on its own canvas, fitted with the training decoder."""
from __future__ import annotations

import pytest

from arc.data.module import ARCDataModule

SETTINGS = dict(source="shapes", source_options={"size": 8, "count": {"train": 8, "val": 4, "test": 4}},
                canvas={"size": 16, "mode": "centre"}, field={"latent_dim": 4, "latents_per_pixel": 0.1},
                pretrain={"images": 4, "steps": 5}, fit={"steps": 4, "pixel_budget": 4096}, batch_size=4)


def test_the_test_split_is_fitted_on_its_canvas_with_the_training_decoder(tmp_path):
    displaced = ARCDataModule(root=str(tmp_path), test_canvas={"size": 16, "mode": "random"}, **SETTINGS)
    displaced.setup("fit")
    displaced.setup("test")
    assert displaced.test_store.path != displaced.cloud_store.path and not displaced.cloud_store.has_split("test")
    assert displaced.decoder_hash == displaced.cloud_store.decoder_hash == displaced.test_store.decoder_hash
    assert displaced.latent_stats is not None
    centred = ARCDataModule(root=str(tmp_path), **SETTINGS)
    centred.setup("test")  # the same decoder (keyed by the training canvas), no refit of train
    assert centred.decoder_path == displaced.decoder_path and centred.cloud_store.path == displaced.cloud_store.path
    moved = next(iter(displaced.test_dataloader()))
    still = next(iter(centred.test_dataloader()))
    assert moved.label.tolist() == still.label.tolist() and moved.size.tolist() == still.size.tolist()
    assert not moved.pos.mean(0).allclose(still.pos.mean(0))  # the images sit elsewhere on the canvas


def test_a_bad_test_canvas_is_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match="canvas mode"):
        ARCDataModule(root=str(tmp_path), test_canvas={"size": 16, "mode": "sideways"}, **SETTINGS)
