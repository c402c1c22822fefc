"""Inference on raw images: the checkpoint's inference record, arc.load, the cloud cache, bundles, tools/predict.py.

One tiny model is trained once for the module (tests/data/tiny.yaml, 1 epoch, CPU); its images are
generated shapes written as PNG files.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import arc
from arc.bundle import export_bundle
from arc.cli import main as train
from arc.data.sources import open_source
from arc.export import main as export_main
from arc.field.fitting import fit_clouds
from arc.inference import ModelFileError
from arc.inputs import content_index
from arc.predict import main as predict_main

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of the tiny config, a folder of 40 shape PNGs plus one corrupt PNG, their labels."""
    root = tmp_path_factory.mktemp("predict")
    shutil.copy(DATA / "tiny.yaml", root / "tiny.yaml")
    here = os.getcwd()
    os.chdir(root)
    try:
        train(["fit", "--config", "tiny.yaml", "--test_after_fit", "false", "--trainer.max_epochs", "1"])
    finally:
        os.chdir(here)
    images = root / "images"
    images.mkdir()
    source = open_source("shapes", size=12, count={"train": 4, "val": 4, "test": 40}, seed=1)
    labels = []
    for i, (image, label) in enumerate(source.split("test")):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(images / f"{i:02d}.png")
        labels.append(source.class_names[label])
    (images / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return SimpleNamespace(root=root, ckpt=root / "runs/tiny/version_0/checkpoints/best.ckpt", images=images,
                           labels=labels, cache=root / "cache")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_checkpoint_carries_what_inference_needs(trained):
    checkpoint = torch.load(trained.ckpt, map_location="cpu", weights_only=True)  # no pickle needed
    record = checkpoint["arc_inference"]
    assert record["field"]["latent_dim"] == 8 and record["fit"]["steps"] == 10
    assert record["preprocess"] == {"channels": 1, "dims": 2, "center_crop": None, "max_pixels": 1024**2,
                                    "image_size": [12, 12], "canvas": None}
    assert len(record["class_names"]) == 6
    assert record["decoder_header"]["hash"] == checkpoint["arc_decoder_hash"]
    predictor = arc.load(trained.ckpt, device="cpu")
    assert not predictor.model.training and predictor.model.normaliser.has_stats


def test_the_loaded_model_classifies_as_the_classifier_does(trained):
    from arc.classifier import ARCClassifier

    predictor = arc.load(trained.ckpt, device="cpu")
    images = [predictor.read(trained.images / f"{i:02d}.png")[0] for i in range(6)]
    clouds = fit_clouds(images, predictor.decoder, predictor.field, predictor.fit, "predict", list(range(6))).clouds
    checkpoint = torch.load(trained.ckpt, map_location="cpu", weights_only=True)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    classifier = ARCClassifier(**hparams)  # not load_from_checkpoint: it re-instantiates the CLI's backbone partial
    classifier.load_state_dict(checkpoint["state_dict"])
    classifier.eval()
    with torch.no_grad():
        ours, theirs = predictor.model.log_probs(clouds), classifier.evaluate_logits(clouds)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_predict_writes_one_row_per_file_and_the_python_api_agrees(trained, capsys):
    out = trained.root / "predictions.csv"
    code = predict_main(["--model", str(trained.ckpt), "--input", str(trained.images), "--out", str(out),
                         "--cache-dir", str(trained.cache), "--device", "cpu"])
    assert code == 0
    rows = read_rows(out)
    names = arc.load(trained.ckpt, device="cpu").class_names
    assert len(rows) == 41 and list(rows[0]) == ["path", "pred", *[f"prob_{n}" for n in names], "error"]
    good, bad = rows[:40], rows[40]
    assert all(row["error"] == "" and row["pred"] in names for row in good)
    for row in good:
        assert abs(sum(float(row[f"prob_{n}"]) for n in names) - 1) < 1e-4
    assert bad["path"].endswith("zz_corrupt.png") and bad["pred"] == "" and "unreadable" in bad["error"]
    assert "41 files: 40 classified, 1 skipped with an error" in capsys.readouterr().out

    paths = [Path(row["path"]) for row in good]
    result = arc.load(trained.ckpt, device="cpu").predict(paths, cache=False)  # fitted anew: the same clouds
    assert result.pred == [row["pred"] for row in good] and result.fitted == 40
    expected = torch.tensor([[float(row[f"prob_{n}"]) for n in names] for row in good])
    torch.testing.assert_close(result.probs, expected, rtol=0, atol=1e-6)


def test_the_cache_makes_a_second_call_skip_fitting(trained, tmp_path):
    predictor = arc.load(trained.ckpt, device="cpu")
    paths = sorted(trained.images.glob("0*.png"))
    first = predictor.predict(paths, cache_dir=tmp_path)
    second = predictor.predict(paths, cache_dir=tmp_path)
    assert (first.fitted, first.cached, second.fitted, second.cached) == (10, 0, 0, 10)
    assert torch.equal(first.probs, second.probs) and first.pred == second.pred
    broken = next(tmp_path.rglob("*.safetensors"))
    broken.write_bytes(b"garbage")  # a broken entry is a miss: fitted again and rewritten
    again = predictor.predict(paths, cache_dir=tmp_path)
    assert (again.fitted, again.cached) == (1, 9) and torch.equal(again.probs, first.probs)
    as_tensor = torch.from_numpy(np.array(Image.open(paths[3])))  # the same pixels given as a tensor: one image
    third = predictor.predict([as_tensor], cache_dir=tmp_path)
    assert third.cached == 1  # classified alone, not in a batch of 10: equal up to rounding
    torch.testing.assert_close(third.probs[0], first.probs[3], rtol=0, atol=1e-5)


def test_an_exported_bundle_predicts_as_the_checkpoint(trained, tmp_path):
    bundle = tmp_path / "bundle"
    assert export_main([str(trained.ckpt), str(bundle)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == ["arc.json", "decoder.safetensors", "model.safetensors"]
    settings = json.loads((bundle / "arc.json").read_text())
    assert settings["model"]["backbone"]["class_path"] == "ptv3.PointTransformerV3"
    assert settings["evaluation"]["views"] == 1 and len(settings["class_names"]) == 6
    paths = sorted(trained.images.glob("1*.png"))
    ours = arc.load(bundle, device="cpu").predict(paths, cache=False)
    theirs = arc.load(trained.ckpt, device="cpu").predict(paths, cache=False)
    assert torch.equal(ours.probs, theirs.probs) and ours.pred == theirs.pred


def test_the_latent_start_map_travels_in_checkpoints_and_bundles_and_keys_the_cache(trained, tmp_path):
    from dataclasses import replace

    assert export_main([str(trained.ckpt), str(tmp_path / "bundle")]) == 0
    uniform = arc.load(trained.ckpt, device="cpu")
    start = uniform.decoder.latent_start
    assert start is not None and arc.load(tmp_path / "bundle", device="cpu").decoder.latent_start.hash() == start.hash()
    patch = arc.load(tmp_path / "bundle", device="cpu")
    patch.fit = replace(patch.fit, init="patch")
    assert patch.cache_settings()["fit"]["init_hash"] == start.hash() and "init" not in uniform.cache_settings()["fit"]
    paths = sorted(trained.images.glob("0*.png"))
    images = [patch.read(p)[0] for p in paths]
    indices = [content_index(patch.read(p)[1]) for p in paths]
    expected = fit_clouds(images, patch.decoder, patch.field, patch.fit, "predict", indices)
    got = patch.predict(paths, cache=False)
    torch.testing.assert_close(torch.tensor(got.psnr), expected.psnr.float(), rtol=0, atol=1e-4)


def test_a_tampered_bundle_or_a_foreign_file_fails_with_one_line(trained, tmp_path, capsys):
    bundle = export_bundle(trained.ckpt, tmp_path / "bundle")
    weights = load_file(str(bundle / "decoder.safetensors"))
    header = json.loads((bundle / "decoder.safetensors").read_bytes()[8:].split(b"}}")[0] + b"}}")["__metadata__"]
    weights["hidden.bias"] = weights["hidden.bias"] + 0.01
    save_file(weights, str(bundle / "decoder.safetensors"), metadata=header)
    with pytest.raises(ModelFileError, match="corrupt"):
        arc.load(bundle)
    export_bundle(trained.ckpt, bundle)
    settings = json.loads((bundle / "arc.json").read_text())
    (bundle / "arc.json").write_text(json.dumps({**settings, "decoder_hash": "0" * 64}))
    with pytest.raises(ModelFileError, match="do not match the recorded decoder hash"):
        arc.load(bundle)
    (tmp_path / "notes.ckpt").write_text("not a model")
    checkpoint = torch.load(trained.ckpt, map_location="cpu", weights_only=True)
    del checkpoint["arc_inference"]  # a checkpoint saved before inference records existed
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(ModelFileError, match="holds no inference record"):
        arc.load(tmp_path / "old.ckpt")
    for model in (bundle, tmp_path / "notes.ckpt", tmp_path / "old.ckpt", tmp_path / "missing.ckpt", tmp_path):
        capsys.readouterr()
        code = predict_main(["--model", str(model), "--input", str(trained.images), "--out", str(tmp_path / "p.csv")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_a_folder_of_bad_files_gets_an_error_row_each_and_the_rest_is_classified(trained, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    shape = np.asarray(Image.open(trained.images / "00.png"))
    (folder / "unreadable.png").write_bytes(b"GIF89a truncated")
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(folder / "one_pixel.png")
    Image.fromarray(shape.astype(np.uint16) * 257).save(folder / "sixteen_bit.png")
    Image.fromarray(shape).convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("L", (5000, 4000)).save(folder / "huge.png")  # 20 Mpx: more than the default max_read_pixels
    Image.fromarray(shape).save(folder / "good.png")
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "bad.csv"
    assert predict_main(["--model", str(trained.ckpt), "--input", str(folder), "--out", str(out), "--no-cache"]) == 0
    rows = {Path(row["path"]).name: row for row in read_rows(out)}
    assert set(rows) == {"unreadable.png", "empty.jpg", "one_pixel.png", "sixteen_bit.png", "cmyk.jpg", "huge.png",
                         "good.png"}
    assert "unreadable" in rows["unreadable.png"]["error"] and rows["empty.jpg"]["error"] == "empty file"
    assert "smaller than 2x2" in rows["one_pixel.png"]["error"] and "max_read_pixels" in rows["huge.png"]["error"]
    for name in ("sixteen_bit.png", "cmyk.jpg", "good.png"):
        assert rows[name]["error"] == "" and rows[name]["pred"], rows[name]
    assert rows["sixteen_bit.png"]["pred"] == rows["good.png"]["pred"]
    assert "7 files: 3 classified, 4 skipped with an error, 2 converted" in capsys.readouterr().out


def test_images_of_another_size_are_fitted_at_their_own_size_or_resized_on_request(trained, tmp_path, capsys):
    predictor = arc.load(trained.ckpt, device="cpu")
    assert predictor.settings.preprocess["image_size"] == [12, 12]
    big = tmp_path / "big.png"
    Image.open(trained.images / "00.png").resize((24, 24), Image.Resampling.BILINEAR).save(big)
    assert predictor.read(big)[0].shape == (1, 24, 24) and predictor.read(big, resize=True)[0].shape == (1, 12, 12)
    large = torch.rand(1, 1100, 1000)  # more than the sources' max_pixels (1024²): downscaled as in training
    image, _, converted, other_size = predictor.read(large)
    assert image.shape[1] * image.shape[2] <= 1024**2 and converted and other_size
    own, resized = predictor.predict([big], cache=False), predictor.predict([big], cache=False, resize=True)
    assert (own.other_size, own.resized, resized.other_size, resized.resized) == (1, False, 1, True)
    assert predict_main(["--model", str(trained.ckpt), "--input", str(big), "--out", str(tmp_path / "p.csv"),
                         "--no-cache"]) == 0
    assert "1 images differ in size from the training images (12x12): fitted at their own size" in capsys.readouterr().out
