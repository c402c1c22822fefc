"""1-D and 3-D sources: npz with dims, audio folders, NIfTI folders, the generated waves and solids,
and their bad-input rules (counted skips, one clear error)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from arc.data.images import ImageReadError
from arc.data.signals import fit_shape
from arc.data.sources import SourceError, open_source

soundfile = pytest.importorskip("soundfile")
nibabel = pytest.importorskip("nibabel")


def _npz(path, x_train, x_test, **extra):
    y_train, y_test = np.arange(len(x_train)) % 2, np.arange(len(x_test)) % 2
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return f"npz:{path}"


def test_npz_series_channels_first(tmp_path):
    x = np.random.default_rng(0).uniform(size=(20, 6, 50)).astype(np.float32)
    source = open_source(_npz(tmp_path / "har.npz", x, x[:4]), dims=1)
    sample, label = source.split("test")[1]
    assert source.dims == 1 and source.channels == 6 and sample.shape == (6, 50) and label == 1
    assert torch.equal(sample, torch.from_numpy(x[1]))
    assert source.identity["dims"] == 1


def test_npz_raw_values_need_train_range(tmp_path):
    """z-normalised series (as time-series archives ship them): out of [0, 1] is a skip naming the option;
    scale: train_range maps every split by the train range and clips beyond it."""
    x_train = np.random.default_rng(1).normal(size=(20, 1, 30)).astype(np.float32)
    x_test = np.concatenate([x_train[:3], 100 * np.ones((1, 1, 30), np.float32)])
    spec = _npz(tmp_path / "z.npz", x_train, x_test)
    with pytest.raises(ImageReadError, match="scale: train_range"):
        open_source(spec, dims=1).split("test")[0]
    test = open_source(spec, dims=1, scale="train_range").split("test")
    low, high = float(x_train.min()), float(x_train.max())
    assert torch.allclose(test[0][0], torch.from_numpy((x_train[0] - low) / (high - low)), atol=1e-6)
    assert float(test[3][0].min()) == 1.0


def test_npz_single_channel_series_and_volumes(tmp_path):
    series = open_source(_npz(tmp_path / "s.npz", np.zeros((10, 150), np.float32), np.ones((3, 150), np.float32)), dims=1)
    assert series.channels == 1 and series.split("test")[0][0].shape == (1, 150)
    volumes = open_source(_npz(tmp_path / "v.npz", np.zeros((10, 4, 5, 6), np.uint8), np.zeros((3, 4, 5, 6), np.uint8)), dims=3)
    assert volumes.dims == 3 and volumes.split("train")[0][0].shape == (1, 4, 5, 6)


def test_npz_images_keep_their_identity(tmp_path):
    """Adding dims changed nothing for images: no dims key, so 2-D store keys stay."""
    spec = _npz(tmp_path / "img.npz", np.zeros((10, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8))
    assert "dims" not in open_source(spec).identity and open_source(spec).dims == 2


@pytest.mark.parametrize("dims, shape, message", [(1, (10, 2, 3, 4), "option dims: 1"), (3, (10, 5, 5), "option dims: 3"), (4, (10, 5), "dims must be")])
def test_npz_wrong_shape_for_dims(tmp_path, dims, shape, message):
    spec = _npz(tmp_path / "bad.npz", np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    with pytest.raises(SourceError, match=message):
        open_source(spec, dims=dims)


def test_nan_sample_is_a_counted_skip(tmp_path):
    x = np.zeros((10, 1, 30), np.float32)
    x[2, 0, 5] = np.nan
    x[4, 0, 5] = 1.5
    split = open_source(_npz(tmp_path / "nan.npz", x, x[:3]), dims=1, test_fraction=0.0).split("train")
    position = {split.describe(i): i for i in range(len(split))}
    with pytest.raises(ImageReadError, match="NaN"):
        split[position["nan.npz x_train[2]"]]
    with pytest.raises(ImageReadError, match="outside \\[0, 1\\]"):
        split[position["nan.npz x_train[4]"]]
    assert split.skipped == 2


@pytest.mark.parametrize("mode, expected", [("pad", [1, 2, 3, 0, 0]), ("resample", None)])
def test_fit_shape_lengthens(mode, expected):
    sample = torch.tensor([[1.0, 2.0, 3.0]])
    out, changed = fit_shape(sample, (5,), mode, "x")
    assert changed and out.shape == (1, 5)
    if expected is not None:
        assert out[0].tolist() == expected


def test_fit_shape_crops_the_centre_and_refuses():
    sample = torch.arange(10.0).view(1, 10)
    assert fit_shape(sample, (4,), "crop", "x")[0][0].tolist() == [3, 4, 5, 6]
    with pytest.raises(ImageReadError, match="ragged: refuse"):
        fit_shape(sample, (4,), "refuse", "x")
    volume, _ = fit_shape(torch.ones(1, 2, 3, 4), (3, 3, 3), "pad", "v")
    assert volume.shape == (1, 3, 3, 3) and volume.sum() == 2 * 3 * 3


def _wav(path, frames, rate=8000, channels=1, seed=0):
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(frames, channels)).astype(np.float32)  # PCM units
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, rate)
    return data


def test_audio_folder_mono_mix_resample_and_length(tmp_path, caplog):
    _wav(tmp_path / "train/yes/a.wav", 800)
    stereo = _wav(tmp_path / "train/yes/b.wav", 800, channels=2)
    _wav(tmp_path / "train/no/c.flac", 1600, rate=16000)
    _wav(tmp_path / "train/no/d.wav", 500)
    (tmp_path / "train/no/notes.txt").write_text("not audio")
    (tmp_path / "train/no/broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(SourceError, match="sample rates \\[8000, 16000\\].*sample_rate"):
        open_source(f"audio:{tmp_path}")
    caplog.set_level(logging.INFO)
    source = open_source(f"audio:{tmp_path}", sample_rate=8000, length=800, val_fraction=0.0, test_fraction=0.0)
    split = source.split("train")
    assert source.dims == 1 and source.channels == 1 and source.class_names == ("no", "yes")
    by_name = {split.describe(i).rsplit("/", 1)[1]: i for i in range(len(split))}
    assert "notes.txt" not in by_name
    mixed, _ = split[by_name["b.wav"]]
    assert torch.allclose(mixed[0], torch.from_numpy(stereo.mean(axis=1) + 1) / 2, atol=1e-4)  # [-1, 1] -> [0, 1]; 16-bit rounding
    assert split[by_name["c.flac"]][0].shape == (1, 800)  # 1600 frames at 16 kHz -> 800 at 8 kHz
    assert (split[by_name["d.wav"]][0][0, 500:] == 0.5).all()  # padded with silence to 800
    with pytest.raises(ImageReadError, match="broken.wav"):
        split[by_name["broken.wav"]]
    assert split.skipped == 1 and split.converted == 1 and split.resized == 1
    assert "resampling audio from 16000 Hz" in caplog.text


def test_audio_speech_commands_layout(tmp_path):
    for name in ("yes/a.wav", "yes/b.wav", "yes/c.wav", "no/d.wav", "no/e.wav", "_background_noise_/noise.wav"):
        _wav(tmp_path / name, 400)
    (tmp_path / "validation_list.txt").write_text("yes/b.wav\n")
    (tmp_path / "testing_list.txt").write_text("no/e.wav\nyes/c.wav\n")
    source = open_source(f"audio:{tmp_path}", split_lists=True)
    assert source.class_names == ("no", "yes")
    names = {split: sorted(source.split(split).describe(i).split(str(tmp_path))[1] for i in range(len(source.split(split))))
             for split in ("train", "val", "test")}
    assert names == {"train": ["/no/d.wav", "/yes/a.wav"], "val": ["/yes/b.wav"], "test": ["/no/e.wav", "/yes/c.wav"]}
    (tmp_path / "testing_list.txt").unlink()
    with pytest.raises(SourceError, match="testing_list.txt"):
        open_source(f"audio:{tmp_path}", split_lists=True)


def _nifti(path, shape, zooms=(1.0, 1.0, 1.0), flip=False, value=None):
    data = np.random.default_rng(len(str(path))).uniform(0, 1000, size=shape).astype(np.float32) if value is None else value
    affine = np.diag([*zooms, 1.0])
    if flip:
        affine[0, 0] = -zooms[0]
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_zooms(zooms[: len(shape)] + (1.0,) * (len(shape) - 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, path)
    return data


def test_nifti_folder_orientation_spacing_and_intensity(tmp_path):
    _nifti(tmp_path / "train/tumour/a.nii.gz", (6, 5, 4))
    _nifti(tmp_path / "train/tumour/b.nii", (6, 5, 4))
    _nifti(tmp_path / "train/healthy/c.nii.gz", (6, 5, 4), flip=True)
    _nifti(tmp_path / "train/healthy/d.nii.gz", (3, 5, 4), zooms=(2.0, 1.0, 1.0))
    source = open_source(f"nifti:{tmp_path}", val_fraction=0.0, test_fraction=0.0)
    split = source.split("train")
    names = {split.describe(i).rsplit("/", 1)[1]: i for i in range(len(split))}
    volume, label = split[names["a.nii.gz"]]
    assert source.dims == 3 and volume.shape == (1, 6, 5, 4) and float(volume.min()) == 0.0 and float(volume.max()) == 1.0
    with pytest.raises(ImageReadError, match="orientation LAS"):
        split[names["c.nii.gz"]]
    with pytest.raises(ImageReadError, match="spacing"):
        split[names["d.nii.gz"]]
    fixed = open_source(f"nifti:{tmp_path}", orientation="RAS", spacing=[1, 1, 1], val_fraction=0.0, test_fraction=0.0).split("train")
    assert fixed[names["c.nii.gz"]][0].shape == (1, 6, 5, 4)
    assert fixed[names["d.nii.gz"]][0].shape == (1, 6, 5, 4)  # 3 voxels of 2 mm -> 6 of 1 mm
    with pytest.raises(SourceError, match="axis codes"):
        open_source(f"nifti:{tmp_path}", orientation="RAR")


def test_nifti_reorientation_flips_the_data(tmp_path):
    ramp = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2) / 23
    _nifti(tmp_path / "train/a/x.nii.gz", (4, 3, 2), flip=True, value=ramp)
    _nifti(tmp_path / "train/b/y.nii.gz", (4, 3, 2), value=ramp)
    split = open_source(f"nifti:{tmp_path}", orientation="RAS", intensity="raw", val_fraction=0.0, test_fraction=0.0).split("train")
    names = {split.describe(i).rsplit("/", 1)[1]: i for i in range(len(split))}
    assert torch.equal(split[names["x.nii.gz"]][0][0], torch.from_numpy(ramp[::-1].copy()))
    assert torch.equal(split[names["y.nii.gz"]][0][0], torch.from_numpy(ramp))


def test_generated_sources_are_seeded_and_balanced():
    waves = open_source("waves", count=12, channels=3, length=64)
    a, label = waves.split("val")[7]
    assert a.shape == (3, 64) and label == 1 and torch.equal(a, waves.split("val")[7][0])
    assert not torch.equal(a, open_source("waves", count=12, channels=3, length=64, seed=1).split("val")[7][0])
    solids = open_source("solids", count=12, size=8)
    volume, label = solids.split("test")[5]
    assert volume.shape == (1, 8, 8, 8) and label == 5 and 0.0 <= float(volume.min()) < float(volume.max()) <= 1.0
    assert torch.bincount(solids.split("train").labels).tolist() == [2] * 6


@pytest.mark.parametrize("spec, options, message", [
    ("waves", {"canvas": {"size": 100}}, "canvas is an image setting"),
    ("waves", {"center_crop": 4}, "center_crop is an image setting"),
    ("waves", {"max_pixels": 100}, "max_pixels is an image setting"),
    ("solids", {"ragged": "pad"}, "needs option shape"),
    ("waves", {"length": 10, "ragged": "stretch"}, "ragged must be one of"),
    ("waves", {"shape": [4]}, "length or shape, not both"),
    ("solids", {"shape": [4, 4]}, "shape must be a list of 3"),
    ("solids", {"length": 4}, "length is for 1-D sources"),
    ("waves", {"size": 4}, "unknown options"),
])
def test_signal_option_errors(spec, options, message):
    with pytest.raises(SourceError, match=message):
        open_source(spec, count=6, **options)


def test_a_missing_signals_package_names_the_extra():
    from arc.data.sources.readers import signals_package

    with pytest.raises(SourceError, match=r"audio sources need the no_such_package package: pip install 'arc\[signals\]'"):
        signals_package("no_such_package", "audio sources")
