"""Image sources: npz, imagefolder, digits, shapes, torchvision (faked files), split rules, bad input, and one
contract battery over every source kind."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arc.data import ImageReadError, SourceError, open_source


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _grey_arrays(rng: np.random.Generator, n_train: int = 20, n_test: int = 5, size: int = 6):
    return dict(
        x_train=rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        y_train=rng.integers(0, 3, n_train),
        x_test=rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        y_test=rng.integers(0, 3, n_test),
    )


def _split_images(split) -> torch.Tensor:
    return torch.stack([split[i][0] for i in range(len(split))])


def test_npz_round_trip_and_val_carved_from_train(tmp_path):
    arrays = _grey_arrays(np.random.default_rng(0))
    path = _npz(tmp_path / "grey.npz", **arrays)
    source = open_source(f"npz:{path}", val_fraction=0.1, seed=3)
    assert source.channels == 1 and source.splits == ("train", "val", "test")
    train, val, test = (source.split(name) for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 5)
    expected_test = torch.from_numpy(arrays["x_test"]).float().div(255).unsqueeze(1)
    assert torch.equal(_split_images(test), expected_test)
    assert test.labels.tolist() == arrays["y_test"].tolist()
    # train + val together are exactly the original train images, each once, labels attached
    pool = {arrays["x_train"][i].tobytes(): int(arrays["y_train"][i]) for i in range(20)}
    seen = []
    for split in (train, val):
        for i in range(len(split)):
            image, label = split[i]
            key = (image[0] * 255).round().to(torch.uint8).numpy().tobytes()
            assert pool[key] == label
            seen.append(key)
    assert sorted(seen) == sorted(pool)
    again = open_source(f"npz:{path}", val_fraction=0.1, seed=3)
    assert torch.equal(_split_images(again.split("val")), _split_images(val))
    assert again.identity == source.identity
    other_seed = open_source(f"npz:{path}", val_fraction=0.1, seed=4)
    assert other_seed.identity_hash != source.identity_hash


def test_npz_own_val_split_is_used(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _grey_arrays(rng)
    arrays.update(x_val=rng.integers(0, 256, (4, 6, 6), dtype=np.uint8), y_val=np.array([0, 1, 2, 1]))
    source = open_source(f"npz:{_npz(tmp_path / 'v.npz', **arrays)}")
    assert [len(source.split(s)) for s in ("train", "val", "test")] == [20, 4, 5]
    assert source.split("val").labels.tolist() == [0, 1, 2, 1]
    assert torch.equal(source.split("train")[7][0][0], torch.from_numpy(arrays["x_train"][7]).float() / 255)


def test_npz_colour_and_rgba(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (3, 5, 7, 4), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    path = _npz(tmp_path / "c.npz", x_train=rgb, y_train=labels, x_test=rgba, y_test=labels[:3], class_names=np.array(["cat", "dog"]))
    source = open_source(f"npz:{path}")
    assert source.channels == 3 and source.class_names == ("cat", "dog") and source.num_classes == 2
    image, label = source.split("test")[1]
    expected = torch.from_numpy(rgba[1]).float().div(255).permute(2, 0, 1)
    assert image.shape == (3, 5, 7) and label == 1
    assert torch.allclose(image, expected[:3] * expected[3:])
    assert source.split("test").converted == 0


def test_npz_grey_test_split_converted_to_colour(tmp_path):
    rng = np.random.default_rng(3)
    path = _npz(
        tmp_path / "mix.npz",
        x_train=rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8), y_train=np.array([0, 1, 0, 1]),
        x_test=rng.integers(0, 256, (2, 5, 5), dtype=np.uint8), y_test=np.array([0, 1]),
    )
    test = open_source(f"npz:{path}").split("test")
    image, _ = test[0]
    assert image.shape == (3, 5, 5) and torch.equal(image[0], image[2]) and test.converted == 1
    test[0]
    assert test.converted == 1  # distinct images, not accesses


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(y_train=np.zeros(19, dtype=np.int64)), "20 images but y_train has 19"),
        (dict(x_train=np.zeros((20, 6, 6), dtype=np.int32)), "dtype int32"),
        (dict(y_test=np.array([0, 1, 2, 3, -1])), "outside"),
        (dict(x_test=np.zeros((5, 6, 6, 5), dtype=np.uint8)), "shape"),
        (dict(y_train=np.zeros(20, dtype=np.float32)), "integer"),
    ],
)
def test_bad_npz_is_refused_at_open(tmp_path, change, message):
    arrays = {**_grey_arrays(np.random.default_rng(4)), **change}
    with pytest.raises(SourceError, match=message):
        open_source(f"npz:{_npz(tmp_path / 'bad.npz', **arrays)}")


def test_npz_missing_key_and_not_a_zip(tmp_path):
    arrays = _grey_arrays(np.random.default_rng(5))
    del arrays["y_test"]
    with pytest.raises(SourceError, match="y_test"):
        open_source(f"npz:{_npz(tmp_path / 'm.npz', **arrays)}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(SourceError, match="junk.npz: not an .npz archive"):
        open_source(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(SourceError, match="not found"):
        open_source(f"npz:{tmp_path / 'absent.npz'}")


def test_nan_and_tiny_images_raise_image_read_error(tmp_path):
    x = np.full((3, 4, 4), 0.5, dtype=np.float32)
    x[1, 2, 2] = np.nan
    x[2, 0, 0] = 1.5
    path = _npz(tmp_path / "f.npz", x_train=x, y_train=np.zeros(3, dtype=np.int64),
                x_test=np.zeros((1, 1, 5), dtype=np.uint8), y_test=np.zeros(1, dtype=np.int64))
    source = open_source(f"npz:{path}", val_fraction=0.0)
    train = source.split("train")
    assert torch.equal(train[0][0], torch.full((1, 4, 4), 0.5))
    with pytest.raises(ImageReadError, match=r"train\[1\].*NaN"):
        train[1]
    with pytest.raises(ImageReadError, match="outside"):
        train[2]
    assert train.skipped == 2 and train.skipped_indices == [1, 2]
    with pytest.raises(ImageReadError, match="smaller than 2x2"):
        source.split("test")[0]


def _save(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _folder(root: Path, splits=("train",), per_class: int = 4) -> Path:
    rng = np.random.default_rng(6)
    for split in splits:
        for cls in ("ant", "bee"):
            for i in range(per_class):
                _save(root / split / cls / f"{i}.png", rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB")
    return root


def test_imagefolder_corrupt_rgba_and_grey(tmp_path):
    root = _folder(tmp_path / "data", splits=("train", "val", "test"))
    rgba = np.random.default_rng(7).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    _save(root / "test" / "ant" / "rgba.png", rgba, "RGBA")
    grey = np.arange(30, dtype=np.uint8).reshape(6, 5)
    _save(root / "test" / "bee" / "grey.png", grey, "L")
    good = (root / "train" / "ant" / "0.png").read_bytes()
    (root / "test" / "bee" / "broken.png").write_bytes(good[: len(good) // 2])
    source = open_source(f"imagefolder:{root}")
    assert source.channels == 3 and source.class_names == ("ant", "bee")
    test = source.split("test")
    names = [Path(test.describe(i)).name for i in range(len(test))]
    rgba_image, label = test[names.index("rgba.png")]
    expected = torch.from_numpy(rgba).float().div(255).permute(2, 0, 1)
    assert label == 0 and torch.allclose(rgba_image, expected[:3] * expected[3:])
    grey_image, label = test[names.index("grey.png")]
    assert label == 1 and grey_image.shape == (3, 6, 5)
    assert torch.allclose(grey_image, torch.from_numpy(grey).float().div(255).expand(3, -1, -1))
    with pytest.raises(ImageReadError, match="broken.png"):
        test[names.index("broken.png")]
    assert test.converted == 1 and test.skipped == 1
    # grey forced: RGB converted by luminance and counted
    grey_source = open_source(f"imagefolder:{root}", channels=1)
    image, _ = grey_source.split("train")[0]
    rgb = np.asarray(Image.open(root / "train" / "ant" / "0.png")).astype(np.float32) / 255
    assert image.shape == (1, 6, 5)
    assert torch.allclose(image[0], torch.from_numpy(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)), atol=1e-6)
    assert grey_source.split("train").converted == 1


def test_no_test_split_rule_official_val_becomes_test(tmp_path):
    """Imagenette's rule, simulated: train/ and val/ only -> val is test, val carved from train."""
    root = _folder(tmp_path / "tv", splits=("train", "val"), per_class=10)
    source = open_source(f"imagefolder:{root}", val_fraction=0.1, seed=0)
    test, val, train = source.split("test"), source.split("val"), source.split("train")
    assert len(test) == 20 and len(val) == 2 and len(train) == 18
    assert all("/val/" in Path(test.describe(i)).as_posix() for i in range(len(test)))
    carved = sorted(val.describe(i) for i in range(len(val))) + sorted(train.describe(i) for i in range(len(train)))
    assert all("/train/" in Path(path).as_posix() for path in carved) and len(set(carved)) == 20


def test_train_only_folder_carves_test_and_val(tmp_path):
    root = _folder(tmp_path / "t", per_class=10)
    source = open_source(f"imagefolder:{root}", val_fraction=0.1, test_fraction=0.2)
    assert [len(source.split(s)) for s in ("train", "val", "test")] == [14, 2, 4]


def test_imagefolder_identity_and_bad_layouts(tmp_path):
    root = _folder(tmp_path / "d", splits=("train", "val"))
    first = open_source(f"imagefolder:{root}").identity_hash
    assert open_source(f"imagefolder:{root}").identity_hash == first
    _save(root / "train" / "bee" / "new.png", np.zeros((4, 4, 3), dtype=np.uint8), "RGB")
    assert open_source(f"imagefolder:{root}").identity_hash != first
    _save(root / "val" / "wasp" / "0.png", np.zeros((4, 4, 3), dtype=np.uint8), "RGB")
    with pytest.raises(SourceError, match="wasp"):
        open_source(f"imagefolder:{root}")
    with pytest.raises(SourceError, match="train"):
        open_source(f"imagefolder:{tmp_path / 'nowhere'}")


def test_center_crop_option(tmp_path):
    x = np.arange(2 * 6 * 8, dtype=np.uint8).reshape(2, 6, 8)
    path = _npz(tmp_path / "c.npz", x_train=x, y_train=np.zeros(2, dtype=np.int64), x_test=x, y_test=np.zeros(2, dtype=np.int64))
    image, _ = open_source(f"npz:{path}", val_fraction=0.0, center_crop=4).split("test")[1]
    assert torch.equal(image[0], torch.from_numpy(x[1, 1:5, 2:6]).float() / 255)
    with pytest.raises(ImageReadError, match="center_crop"):
        open_source(f"npz:{path}", val_fraction=0.0, center_crop=7).split("test")[0]


def test_digits_sizes_and_deterministic_splits():
    source = open_source("digits", size=12, seed=1)
    lengths = [len(source.split(s)) for s in ("train", "val", "test")]
    assert sum(lengths) == 1797 and lengths == [1258, 180, 359]
    image, label = source.split("val")[3]
    assert image.shape == (1, 12, 12) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.5
    again = open_source("digits", size=12, seed=1)
    assert torch.equal(again.split("val")[3][0], image) and torch.equal(again.split("test").labels, source.split("test").labels)
    other = open_source("digits", size=12, seed=2)
    assert not torch.equal(other.split("test").labels, source.split("test").labels)
    native = open_source("digits", size=8).split("train")
    from sklearn.datasets import load_digits

    digits = load_digits()
    first = int(native.reader.indices[0])
    assert torch.allclose(native[0][0][0], torch.from_numpy(digits.images[first]).float() / 16)


def test_shapes_deterministic_any_resolution():
    source = open_source("shapes", size=32, channels=3, count={"train": 12, "val": 6, "test": 6}, seed=5)
    train = source.split("train")
    assert source.num_classes == 6 and source.channels == 3
    a, label = train[4]
    assert a.shape == (3, 32, 32) and label == 4 and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(open_source("shapes", size=32, channels=3, count=12, seed=5).split("train")[4][0], a)
    assert not torch.equal(train[10][0], a)  # same class, other draw
    assert not torch.equal(source.split("val")[4][0], a)  # split enters the seed
    assert torch.bincount(train.labels).tolist() == [2] * 6
    big = open_source("shapes", size=1024, count=10).split("test")[3][0]
    assert big.shape == (1, 1024, 1024) and float(big.std()) > 0.05
    with pytest.raises(SourceError, match="count"):
        open_source("shapes", count={"train": 3})


def _fake_mnist(root: Path, rng: np.random.Generator) -> tuple[dict, dict]:
    """MNIST's raw idx files under root/MNIST/raw (10 train, 4 test images): (images, labels) by file prefix."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(name: str, array: np.ndarray) -> None:
        header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        (raw / name).write_bytes(header + array.astype(np.uint8).tobytes())

    images = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 10), ("t10k", 4))}
    labels = {s: rng.integers(0, 10, n).astype(np.uint8) for s, n in (("train", 10), ("t10k", 4))}
    for s in ("train", "t10k"):
        idx(f"{s}-images-idx3-ubyte", images[s])
        idx(f"{s}-labels-idx1-ubyte", labels[s])
    return images, labels


def test_torchvision_mnist_from_local_files_and_missing(tmp_path):
    images, labels = _fake_mnist(tmp_path, np.random.default_rng(8))
    source = open_source("torchvision:MNIST", root=tmp_path, download=False, val_fraction=0.2)
    assert source.channels == 1 and source.num_classes == 10
    assert [len(source.split(s)) for s in ("train", "val", "test")] == [8, 2, 4]
    image, label = source.split("test")[2]
    assert label == labels["t10k"][2] and torch.equal(image[0], torch.from_numpy(images["t10k"][2]).float() / 255)
    with pytest.raises(SourceError, match="download=True"):
        open_source("torchvision:FashionMNIST", root=tmp_path, download=False)


def test_spec_and_option_errors(tmp_path):
    with pytest.raises(SourceError, match="unknown source"):
        open_source("webdataset:foo")
    with pytest.raises(SourceError, match="torchvision"):
        open_source("torchvision:ImageNet")
    with pytest.raises(SourceError, match="unknown options"):
        open_source("digits", colour="yes")
    with pytest.raises(SourceError, match="size"):
        open_source("torchvision:Imagenette", root=tmp_path, size="999px")
    with pytest.raises(SourceError, match="download=True"):
        open_source("torchvision:Imagenette", root=tmp_path, size="160px", center_crop=160)
    with pytest.raises(SourceError, match="val_fraction"):
        open_source("digits", val_fraction=1.5)


def test_canvas_centre_placement_exact():
    from arc.data import CanvasConfig, apply_canvas

    image = torch.rand(1, 3, 5)
    placed = apply_canvas(image, CanvasConfig(size=8), "train", 0)
    assert placed.shape == (1, 8, 8)
    assert torch.equal(placed[:, 2:5, 1:6], image)  # top (8-3)//2 = 2, left (8-5)//2 = 1
    placed[:, 2:5, 1:6] = 0
    assert not bool(placed.any())


def test_canvas_random_placement_seeded_per_item():
    from arc.data import CanvasConfig, CanvasError
    from arc.data.canvas import canvas_placement

    canvas = CanvasConfig(size=40, mode="random", seed=7)
    spots = [canvas_placement(canvas, 28, 28, "train", i) for i in range(30)]
    assert spots == [canvas_placement(canvas, 28, 28, "train", i) for i in range(30)]
    assert all(0 <= top <= 12 and 0 <= left <= 12 for top, left in spots)
    assert len(set(spots)) > 10
    assert spots != [canvas_placement(canvas, 28, 28, "test", i) for i in range(30)]
    assert spots != [canvas_placement(CanvasConfig(40, "random", 8), 28, 28, "train", i) for i in range(30)]
    with pytest.raises(CanvasError, match="larger than the 40x40 canvas"):
        canvas_placement(canvas, 41, 10, "train", 0)


def test_canvas_inside_split(tmp_path):
    """The fitted image is the padded one: split[i] returns the canvas with the image where placement says."""
    from arc.data.canvas import CanvasConfig, canvas_placement

    x = np.random.default_rng(9).integers(1, 256, (4, 6, 6), dtype=np.uint8)
    y = np.zeros(4, dtype=np.int64)
    path = _npz(tmp_path / "p.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    source = open_source(f"npz:{path}", val_fraction=0.0, canvas={"size": 16, "mode": "random", "seed": 1})
    image, _ = source.split("test")[2]
    top, left = canvas_placement(CanvasConfig(16, "random", 1), 6, 6, "test", 2)
    assert image.shape == (1, 16, 16)
    assert torch.equal(image[0, top : top + 6, left : left + 6], torch.from_numpy(x[2]).float() / 255)
    assert int((image > 0).sum()) == 36
    assert source.identity["canvas"] == {"size": 16, "mode": "random", "seed": 1}
    with pytest.raises(ValueError, match="canvas"):
        open_source(f"npz:{path}", canvas={"size": 16, "place": "left"})


def _fake_imagenette(root: Path, rng: np.random.Generator) -> None:
    """Imagenette's 160px folders under root: train (10 per class) and val (3 per class), 2 classes, 12x10 RGB."""
    for split, per_class in (("train", 10), ("val", 3)):
        for wnid in ("n01440764", "n02102040"):
            for i in range(per_class):
                _save(root / "imagenette2-160" / split / wnid / f"{wnid}_{i}.JPEG", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB")


def test_torchvision_imagenette_from_local_folder(tmp_path):
    """Imagenette has train and val only: its val becomes test, and center_crop gives square images."""
    _fake_imagenette(tmp_path, np.random.default_rng(10))
    source = open_source("torchvision:Imagenette", root=tmp_path, size="160px", center_crop=8, val_fraction=0.1)
    assert source.class_names == ("tench", "English springer") and source.channels == 3
    assert [len(source.split(s)) for s in ("train", "val", "test")] == [18, 2, 6]
    test = source.split("test")
    assert all("/val/" in Path(test.describe(i)).as_posix() for i in range(6))
    assert test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    image, _ = test[0]
    assert image.shape == (3, 8, 8)
    assert source.identity["options"] == {"center_crop": 8, "size": "160px"} and source.identity["content"]


def test_pil_modes_decode_to_unit_range(tmp_path):
    from arc.data.images import conform_channels, read_image_file

    wide = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    image = read_image_file(tmp_path / "w.png")
    assert image.shape == (1, 2, 2) and torch.allclose(image[0], torch.from_numpy(wide.astype(np.float32) / 65535))
    la = np.array([[[200, 255], [200, 0]], [[100, 128], [50, 255]]], dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    image, converted = conform_channels(read_image_file(tmp_path / "la.png"), 1)
    assert not converted and torch.allclose(image[0], torch.tensor([[200 / 255, 0.0], [100 / 255 * 128 / 255, 50 / 255]]))
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    image, _ = conform_channels(read_image_file(tmp_path / "p.png"), 3)
    assert torch.equal(image[:, 0, 0], torch.zeros(3)) and torch.equal(image[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    image = read_image_file(tmp_path / "c.jpg")
    assert image.shape == (3, 3, 3) and float(image.min()) > 0.9


# -- one contract over every source kind (each kind is one line of SOURCE_KINDS) ---------------


def _npz_colour(root: Path) -> tuple[str, dict]:
    rng = np.random.default_rng(12)
    path = _npz(root / "colour.npz", x_train=rng.random((8, 5, 7, 3)).astype(np.float32), y_train=np.arange(8) % 2,
                x_test=rng.integers(0, 256, (3, 5, 7, 4), dtype=np.uint8), y_test=np.array([0, 1, 1]), class_names=np.array(["cat", "dog"]))
    return f"npz:{path}", {}


def _mnist(root: Path) -> tuple[str, dict]:
    _fake_mnist(root, np.random.default_rng(13))
    return "torchvision:MNIST", {"root": root, "val_fraction": 0.2}


def _imagenette(root: Path) -> tuple[str, dict]:
    _fake_imagenette(root, np.random.default_rng(14))
    return "torchvision:Imagenette", {"root": root, "size": "160px", "center_crop": 8}


# kind -> (make(root) -> (spec, open_source options), image shape [C, H, W] every image has)
SOURCE_KINDS = {
    "npz": (lambda root: (f"npz:{_npz(root / 'grey.npz', **_grey_arrays(np.random.default_rng(11)))}", {}), (1, 6, 6)),
    "npz-colour": (_npz_colour, (3, 5, 7)),
    "imagefolder": (lambda root: (f"imagefolder:{_folder(root / 'folder', splits=('train', 'test'))}", {}), (3, 6, 5)),
    "digits": (lambda root: ("digits", {"size": 10}), (1, 10, 10)),
    "shapes": (lambda root: ("shapes", {"size": 12, "count": 6}), (1, 12, 12)),
    "shapes-colour": (lambda root: ("shapes", {"size": 12, "channels": 3, "count": 6, "seed": 2}), (3, 12, 12)),
    "torchvision-mnist": (_mnist, (1, 28, 28)),
    "torchvision-imagenette": (_imagenette, (3, 8, 8)),
}


@pytest.fixture(params=sorted(SOURCE_KINDS))
def kind(request, tmp_path) -> tuple[str, dict, tuple[int, int, int]]:
    """(spec, options, image shape) of one source kind, its files made under tmp_path."""
    make, shape = SOURCE_KINDS[request.param]
    spec, options = make(tmp_path)
    return spec, options, shape


def test_source_contract_splits_images_labels(kind):
    spec, options, shape = kind
    source = open_source(spec, **options)
    assert source.splits == ("train", "val", "test") and source.channels == shape[0] in (1, 3)
    assert source.num_classes == len(source.class_names) >= 2 and all(isinstance(name, str) for name in source.class_names)
    for name in source.splits:
        split = source.split(name)
        labels = split.labels
        assert len(split) > 0 and labels.dtype == torch.int64 and labels.shape == (len(split),)
        assert 0 <= int(labels.min()) and int(labels.max()) < source.num_classes
        for i in (0, len(split) - 1):
            image, label = split[i]
            assert image.dtype == torch.float32 and tuple(image.shape) == shape
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            assert isinstance(label, int) and label == int(labels[i])


def test_source_contract_splits_are_disjoint(kind):
    spec, options, _ = kind
    source = open_source(spec, **options)
    places = [source.split(name).describe(i) for name in source.splits for i in range(len(source.split(name)))]
    assert len(set(places)) == len(places)


def test_source_contract_same_identity_when_opened_twice(kind):
    from arc.files import canonical_json

    spec, options, _ = kind
    first, second = open_source(spec, **options), open_source(spec, **options)
    assert first.identity == second.identity and first.identity_hash == second.identity_hash
    assert json.loads(canonical_json(first.identity)) == first.identity and len(first.identity_hash) == 16
    for name in first.splits:
        assert torch.equal(first.split(name).labels, second.split(name).labels)
        assert torch.equal(first.split(name)[0][0], second.split(name)[0][0])
