"""Inference on raw 1-D signals: the checkpoint's record of the source, tensors / .npy / audio files, bad input, the CLI.

One tiny model is trained once for the module on 32-step generated waves (tests/data/tiny_series.yaml, 1 epoch,
CPU, no logger). Test signals are quantised to multiples of 1/256 so that they survive the audio mapping
[0, 1] -> [-1, 1] -> [0, 1] bit for bit: a tensor, its .npy and its .wav are one sample (one cache entry).
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import arc
from arc.bundle import export_bundle
from arc.cli import main as train
from arc.data.sources import open_source
from arc.field.config import FieldConfig
from arc.inputs import training_size
from arc.predict import main as predict_main
from arc.signal_inputs import read_signal, signal_settings

DATA = Path(__file__).parent / "data"
soundfile = pytest.importorskip("soundfile")
nibabel = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A checkpoint of the tiny 1-D config and 8 quantised test signals [1, 32] with their .npy and .wav files."""
    root = tmp_path_factory.mktemp("predict_series")
    shutil.copy(DATA / "tiny_series.yaml", root / "tiny_series.yaml")
    here = os.getcwd()
    os.chdir(root)
    try:
        train(["fit", "--config", "tiny_series.yaml", "--test_after_fit", "false", "--trainer.max_epochs", "1"])
    finally:
        os.chdir(here)
    test = open_source("waves", length=32, count={"train": 4, "val": 4, "test": 8}, seed=1).split("test")
    signals = torch.stack([(test[i][0] * 256).round() / 256 for i in range(len(test))])
    files = root / "files"
    files.mkdir()
    for i, signal in enumerate(signals):
        np.save(files / f"{i}.npy", signal.numpy())
        soundfile.write(files / f"{i}.wav", (signal[0].numpy() * 2 - 1), 8000, subtype="FLOAT")
    return SimpleNamespace(root=root, ckpt=root / "runs/tiny_series/version_0/checkpoints/best.ckpt", signals=signals,
                           files=files)


def test_the_checkpoint_records_how_the_source_read_its_signals(series, tmp_path):
    record = torch.load(series.ckpt, map_location="cpu", weights_only=True)["arc_inference"]
    assert record["preprocess"]["dims"] == 1 and record["preprocess"]["image_size"] == [32]
    assert record["preprocess"]["signal"] == {"kind": "waves", "ragged": "pad", "fill": 0.0}
    predictor = arc.load(series.ckpt, device="cpu")
    assert predictor.decoder.dims == 1
    bundle = arc.load(export_bundle(series.ckpt, tmp_path / "bundle"), device="cpu")
    assert bundle.settings.preprocess == predictor.settings.preprocess


def test_a_tensor_its_npy_and_its_wav_are_one_sample(series, tmp_path):
    predictor = arc.load(series.ckpt, device="cpu")
    batch = predictor.predict(series.signals, cache_dir=tmp_path)  # a [B, C, L] batch is B signals
    assert len(batch) == 8 and batch.fitted == 8 and all(batch.pred) and not any(batch.error)
    assert torch.allclose(batch.probs.sum(1), torch.ones(8), atol=1e-5)
    single = predictor.predict(series.signals[0], cache_dir=tmp_path)  # [C, L]: one signal
    assert len(single) == 1 and single.cached == 1
    npy = predictor.predict(sorted(series.files.glob("*.npy")), cache_dir=tmp_path)
    wav = predictor.predict(sorted(series.files.glob("*.wav")), cache_dir=tmp_path)
    assert (npy.cached, wav.cached, wav.fitted) == (8, 8, 0)
    assert npy.pred == batch.pred == wav.pred and torch.equal(npy.probs, wav.probs)


def test_other_lengths_and_channels_are_brought_to_the_training_shape(series, tmp_path):
    predictor = arc.load(series.ckpt, device="cpu")
    stereo, long = tmp_path / "stereo.wav", tmp_path / "long.wav"
    wave = series.signals[1, 0].numpy() * 2 - 1
    soundfile.write(stereo, np.stack([wave, wave], 1), 8000, subtype="FLOAT")
    soundfile.write(long, np.concatenate([wave, wave]), 8000, subtype="FLOAT")  # 64 steps: cropped to 32 (ragged pad)
    result = predictor.predict([stereo, long, series.signals[1, 0]], cache=False)  # [L]: one channel
    assert not any(result.error) and (result.converted, result.other_size) == (1, 1)
    assert predictor.read(long)[0].shape == (1, 32)


def test_bad_inputs_are_skipped_with_a_reason_naming_the_expected_shape(series, tmp_path):
    predictor = arc.load(series.ckpt, device="cpu")
    picture, broken, nan, loud = tmp_path / "a.png", tmp_path / "b.wav", tmp_path / "nan.npy", tmp_path / "loud.npy"
    Image.new("L", (8, 8)).save(picture)
    broken.write_bytes(b"RIFF not audio")
    np.save(nan, np.full((1, 32), np.nan, np.float32))
    np.save(loud, np.full((1, 32), 3.0, np.float32))
    result = predictor.predict([picture, broken, nan, loud, torch.rand(1, 4, 4, 4), series.signals[2]], cache=False)
    assert "the model takes 1-D samples: a tensor [C, L] (or [L]) or a file .npy, .wav" in result.error[0]
    assert "not a readable audio file" in result.error[1] and "NaN" in result.error[2]
    assert "outside [0, 1]" in result.error[3]
    assert "the model takes 1-D samples [C, L] (or [L]), got shape (1, 4, 4, 4)" in result.error[4]
    assert result.error[5] == "" and result.pred[5] is not None and result.pred[:5] == [None] * 5


def test_the_command_line_reads_npy_and_audio_files(series, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(series.files, folder)
    Image.new("L", (8, 8)).save(folder / "picture.png")
    out = tmp_path / "p.csv"
    assert predict_main(["--model", str(series.ckpt), "--input", str(folder), "--out", str(out), "--no-cache"]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and all(row["pred"] and not row["error"] for row in rows)
    printed = capsys.readouterr().out
    assert "16 files: 16 classified" in printed and "1 other files ignored" in printed
    code = predict_main(["--model", str(series.ckpt), "--input", str(folder), "--out", str(out), "--resize"])
    assert code == 2 and "--resize is for image models" in capsys.readouterr().err


def _preprocess(source) -> dict:
    """The ``preprocess`` record of ``source`` as a checkpoint holds it (arc.inference.inference_record)."""
    return {"channels": source.channels, "dims": source.dims, "image_size": training_size(source),
            "signal": signal_settings(source)}


def test_files_are_read_as_their_source_reads_them(tmp_path):
    """An audio file of another rate, a NIfTI volume and a raw npz row: read_signal gives the source's sample."""
    rng, field = np.random.default_rng(0), FieldConfig(neighbours=4)
    for name, rate in (("train/a/x.wav", 8000), ("train/b/y.wav", 8000), ("test/a/z.wav", 4000)):
        (tmp_path / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(rate // 100) / rate)  # smooth: resampling stays in [-1, 1]
        soundfile.write(tmp_path / "audio" / name, tone, rate, subtype="FLOAT")
    audio = open_source(f"audio:{tmp_path / 'audio'}", sample_rate=8000, length=64, val_fraction=0.0)
    assert signal_settings(audio) == {"kind": "audio", "ragged": "pad", "fill": 0.5, "sample_rate": 8000}
    sample, _, _, other = read_signal(tmp_path / "audio/test/a/z.wav", _preprocess(audio), field, 10**6)
    assert other and torch.equal(sample, audio.split("test")[0][0])  # 40 steps at 4 kHz -> 80 at 8 kHz -> cropped
    volume = np.random.default_rng(1).uniform(0, 900, (6, 5, 4)).astype(np.float32)
    for name in ("train/a/x.nii.gz", "train/b/y.nii.gz"):
        (tmp_path / "nifti" / name).parent.mkdir(parents=True, exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(volume, np.diag([-2.0, 1.0, 1.0, 1.0])), tmp_path / "nifti" / name)
    nifti = open_source(f"nifti:{tmp_path / 'nifti'}", spacing=[1, 1, 1], val_fraction=0.0, test_fraction=0.0)
    settings = signal_settings(nifti)
    assert settings["orientation"] == "LAS" and settings["spacing"] == [1.0, 1.0, 1.0] and settings["resample"]
    sample = read_signal(tmp_path / "nifti/train/a/x.nii.gz", _preprocess(nifti), field, 10**6)[0]
    assert sample.shape == (1, 12, 5, 4) and torch.equal(sample, nifti.split("train")[0][0])
    x = rng.normal(5, 3, (6, 2, 16)).astype(np.float32)
    np.savez(tmp_path / "raw.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x[:2] * 2, y_test=np.arange(2))
    npz = open_source(f"npz:{tmp_path / 'raw.npz'}", dims=1, scale="train_range", val_fraction=0.0)
    assert signal_settings(npz)["value_range"] == [float(x.min()), float(x.max())]
    sample = read_signal(torch.from_numpy(x[1] * 2), _preprocess(npz), field, 10**6)[0]
    assert torch.equal(sample, npz.split("test")[1][0])
