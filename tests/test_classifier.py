"""ARCClassifier on CPU with tiny synthetic clouds that follow the data contract."""
from __future__ import annotations

import csv
import math
from functools import partial
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ptv3 import PointTransformerV3

from arc.callbacks import PredictionWriter, WandbMedia
from arc.classifier import ARCClassifier, ClassifierConfigError
from arc.cloud import CloudBatch, CloudError

Z = 4
TINY = dict(
    enc_depths=(1, 1, 1, 1),
    enc_channels=(16, 16, 16, 16),
    enc_num_head=(2, 2, 2, 2),
    enc_patch_size=(8, 8, 8, 8),
    drop_path=0.0,
    bn_momentum=0.1,
)


def make_cloud(label: int, count: int, g: torch.Generator, index: int = 0, classes: int = 4) -> CloudBatch:
    """One cloud in a 12 x 12 image whose latents carry the class: lat = 2 e_label + N(0, 1) (+ offset 5)."""
    pos = torch.randint(0, 12, (count, 2), generator=g).float()
    lat = torch.randn(count, Z, generator=g) + 5.0
    lat[:, label % Z] += 2.0
    return CloudBatch(
        pos=pos,
        lat=lat,
        offset=torch.tensor([count]),
        label=torch.tensor([label]),
        size=torch.tensor([[12, 12]]),
        index=torch.tensor([index]),
        colour_mean=torch.zeros(1, 1),
        colour_std=torch.ones(1, 1),
    )


class Clouds(Dataset):
    def __init__(self, n: int, seed: int, classes: int = 4) -> None:
        g = torch.Generator().manual_seed(seed)
        counts = torch.randint(3, 30, (n,), generator=g).tolist()
        self.items = [make_cloud(i % classes, counts[i], g, index=i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> CloudBatch:
        return self.items[i]


def batch_of(counts: list[int], seed: int = 0) -> CloudBatch:
    g = torch.Generator().manual_seed(seed)
    return CloudBatch.concat([make_cloud(i % 4, k, g, index=i) for i, k in enumerate(counts)])


class CloudData(pl.LightningDataModule):
    """What the classifier needs from a datamodule: loaders, latent_stats, class_names."""

    def __init__(self, train: int = 64, val: int = 32, batch_size: int = 16) -> None:
        super().__init__()
        self.train_set, self.val_set = Clouds(train, seed=1), Clouds(val, seed=2)
        lat = torch.cat([c.lat for c in self.train_set.items])
        self.latent_stats = (lat.mean(0), lat.std(0, unbiased=False))
        self.class_names = ["ant", "bee", "cat", "dog"]
        self.num_classes = 4
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, self.batch_size, shuffle=True, collate_fn=CloudBatch.concat)

    def val_dataloader(self):
        return DataLoader(self.val_set, self.batch_size, collate_fn=CloudBatch.concat)

    def test_dataloader(self):
        return self.val_dataloader()

    def predict_dataloader(self):
        return self.val_dataloader()


def backbone(**overrides) -> partial:
    """The tiny PTv3 as the classifier takes it: a factory of the latent size."""
    return partial(PointTransformerV3, **{**TINY, **overrides})


def tiny(**kwargs) -> ARCClassifier:
    kwargs.setdefault("backbone", backbone())
    kwargs.setdefault("num_classes", 4)
    return ARCClassifier(latent_dim=Z, **kwargs)


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, enable_checkpointing=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


# ------------------------------------------------------------------ model


def test_forward_shapes_with_tiny_and_single_point_clouds():
    torch.manual_seed(0)
    model = tiny()
    model.set_latent_stats(torch.full((Z,), 5.0), torch.ones(Z))
    model.eval()
    batch = batch_of([1, 2, 7, 60, 3])  # several clouds below the patch size (8)
    logits = model(batch)
    assert logits.shape == (5, 4) and bool(torch.isfinite(logits).all())
    assert torch.equal(model(batch), logits)  # eval is deterministic (fixed curve order, no drop path)
    one = model(batch.cloud(0))
    assert one.shape == (1, 4)


def test_paper_architecture_size():
    model = ARCClassifier(num_classes=10, augment=None)
    n = sum(p.numel() for p in model.parameters())
    assert 0.95e6 < n < 1.1e6  # thesis App. B: about 1.02 M parameters
    assert isinstance(model.model.head, torch.nn.Sequential) and len(model.model.head) == 1


def test_mlp_head():
    model = tiny(head_hidden=[8, 6])
    widths = [m.out_features for m in model.model.head if isinstance(m, torch.nn.Linear)]
    assert widths == [8, 6, 4]


def test_augmentations_run_only_in_training():
    torch.manual_seed(0)
    model = tiny()
    model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
    calls = []
    real = model.augment

    def spy(batch, normalise=None, seed=None):
        calls.append(len(batch))
        return real(batch, normalise=normalise, seed=seed)

    model.augment = spy
    batch = batch_of([10, 12, 9, 20])
    model.train()
    model.training_step(batch, 0)
    assert calls == [4]
    model.eval()
    with torch.no_grad():
        model.validation_step(batch, 0)
        model.test_step(batch, 0)
        model.predict_step(batch, 0)
    assert calls == [4]


@pytest.mark.parametrize("counts", [[1], [2], [3, 1]], ids=["one-point cloud", "one small cloud", "tail batch"])
def test_training_survives_a_last_batch_of_one_small_cloud(counts):
    """A one-cloud last batch pools to a single point in the deep stages (BatchNorm sees one value)."""
    model = tiny(augment={"mask": 0.3})
    model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
    model.train()
    loss = model.training_loss(batch_of(counts))
    loss.backward()
    assert bool(torch.isfinite(loss))


def test_training_step_uses_soft_target_cross_entropy():
    torch.manual_seed(0)
    model = tiny(augment={"arcmix": 1.0}, backbone=backbone(shuffle_orders=False))
    model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
    seen = {}
    real = model.augment

    def keep(batch, normalise=None, seed=None):
        seen["batch"] = real(batch, normalise=normalise, seed=seed)
        return seen["batch"]

    model.augment = keep
    model.train()
    batch = batch_of([10, 12, 9, 20])
    step = 0
    loss = model.training_step(batch, step)
    while seen["batch"].label.max() > 0.95:  # a draw whose mix is nearly one-hot cannot tell the losses apart
        step += 1
        loss = model.training_step(batch, step)
    mixed = seen["batch"]
    assert mixed.label.shape == (4, 4)  # ARCMix made soft targets
    logits = model.classify(mixed.pos, mixed.lat, mixed.offset)  # train-mode BN, no drop path: same logits
    manual = -(mixed.label * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss, manual, atol=1e-5)
    assert not torch.allclose(loss, F.cross_entropy(logits, batch.label))


def test_whole_normalisation_pools_per_dim_stats():
    lat = torch.randn(1000, Z) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + torch.tensor([0.0, 1.0, -2.0, 5.0])
    model = tiny(normalisation="whole")
    model.set_latent_stats(lat.mean(0), lat.std(0, unbiased=False))
    out = model.normalise(lat)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std(unbiased=False)) - 1.0) < 1e-4
    per_dim = tiny()
    per_dim.set_latent_stats(lat.mean(0), lat.std(0, unbiased=False))
    out = per_dim.normalise(lat)
    assert torch.allclose(out.mean(0), torch.zeros(Z), atol=1e-4)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(Z), atol=1e-4)
    raw = tiny(normalisation="none")
    assert torch.equal(raw.normalise(lat), lat)


def test_scheduler_warmup_cosine():
    model = tiny(scheduler="warmup_cosine", warmup_epochs=2, optimizer={"lr": 0.1})
    model._trainer = SimpleNamespace(max_epochs=6)
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.1)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5]
    assert opt.param_groups[0]["weight_decay"] == 1e-3
    constant = tiny()
    assert isinstance(constant.configure_optimizers(), torch.optim.AdamW)


# ------------------------------------------------------------------ bad input


def test_bad_batches_raise_clear_errors():
    model = tiny()
    model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
    good = batch_of([5, 6])
    empty = CloudBatch(**{**good.__dict__, "offset": torch.tensor([5, 5]), "pos": good.pos[:5], "lat": good.lat[:5]})
    with pytest.raises(CloudError, match="empty"):
        model(empty)
    nan = CloudBatch(**{**good.__dict__, "lat": good.lat.clone()})
    nan.lat[3, 1] = float("nan")
    with pytest.raises(CloudError, match="NaN"):
        model(nan)
    wrong = CloudBatch(**{**good.__dict__, "label": torch.tensor([0, 4])})
    with pytest.raises(CloudError, match=r"labels must be in \[0, 4\)"):
        model.training_step(wrong, 0)
    with pytest.raises(CloudError, match="labels"):
        model.validation_step(CloudBatch(**{**good.__dict__, "label": torch.tensor([-1, 0])}), 0)
    with pytest.raises(CloudError, match="dims"):
        model(CloudBatch(**{**good.__dict__, "lat": good.lat[:, :2]}))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(augment={"cutmix": 0.5}), "unknown augmentation 'cutmix'"),
        (dict(normalisation="batch"), "normalisation must be one of"),
        (dict(scheduler="step"), "scheduler must be one of"),
        (dict(backbone=partial(PointTransformerV3, depths=(1, 1))), r"backbone: invalid settings.*'depths'"),
        (dict(optimizer={"learning_rate": 1.0}), r"unknown key 'learning_rate' in optimizer \(valid: lr, weight_decay"),
        (dict(optimizer={"lr": 0.0}), "lr must be > 0"),
        (dict(num_classes=0), "num_classes"),
        (dict(class_names=["a", "b"]), "class_names has 2 names for 4 classes"),
        (dict(head_hidden=[0]), "head_hidden"),
    ],
)
def test_invalid_settings_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_missing_latent_stats_is_a_clear_error(tmp_path):
    model = tiny()
    with pytest.raises(ClassifierConfigError, match="latent statistics"):
        model(batch_of([4, 4]))
    data = CloudData(train=8, val=4)
    del data.latent_stats
    with pytest.raises(ClassifierConfigError, match="latent_stats"):
        trainer(tmp_path, max_epochs=1).fit(model, datamodule=data)
    with pytest.raises(ClassifierConfigError, match="entries"):
        model.set_latent_stats(torch.zeros(3), torch.ones(3))


# ------------------------------------------------------------------ metrics


class Oracle(ARCClassifier):
    """Predicts class round(lat[0, 0]) of each cloud: lets a test choose every prediction."""

    def classify(self, pos, feat, offset):
        starts = offset - torch.diff(offset, prepend=offset.new_zeros(1))
        pred = feat[starts, 0].round().long()
        return F.one_hot(pred, self.num_classes).float() * 10 + self.model.head[0].bias * 0


def test_per_class_metrics_on_a_hand_made_example(tmp_path):
    truth = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 0, 1, 1, 2, 2, 2, 0, 0]  # class 0: 3/4, class 1: 1/2, class 2: 2/4, class 3 absent
    clouds = []
    for i, (t, p) in enumerate(zip(truth, preds)):
        c = make_cloud(t, 3, torch.Generator().manual_seed(i), index=i)
        c.lat[:] = float(p)
        clouds.append(c)
    model = Oracle(num_classes=4, latent_dim=Z, backbone=backbone(), normalisation="none", class_names=["a", "b", "c", "d"])
    loader = DataLoader(clouds, batch_size=4, collate_fn=CloudBatch.concat)
    result = trainer(tmp_path).test(model, loader, verbose=False)[0]
    assert result["test/acc"] == pytest.approx(6 / 10)
    assert result["test/acc_macro"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 4) / 3)
    assert result["test/acc_class/a"] == pytest.approx(0.75)
    assert result["test/acc_class/b"] == pytest.approx(0.5)
    assert result["test/acc_class/c"] == pytest.approx(0.5)
    assert "test/acc_class/d" not in result
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(truth, preds):
        expected[t, p] += 1
    assert torch.equal(model.confusion["test"], expected)


def test_media_confusion_every_epoch_clouds_once(tmp_path, monkeypatch):
    logged = []
    fake = SimpleNamespace(log_image=lambda key, images, step: logged.append((key, images[0].shape)),
                           experiment=SimpleNamespace(define_metric=lambda name, summary: None))
    monkeypatch.setattr(WandbMedia, "_logger", staticmethod(lambda trainer: fake))
    torch.manual_seed(0)
    data = CloudData(train=16, val=8, batch_size=8)
    fit = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, callbacks=[WandbMedia()])
    model = tiny()
    fit.fit(model, datamodule=data)
    fit.test(model, datamodule=data, verbose=False)
    keys = [k for k, _ in logged]
    assert keys == ["val/confusion_matrix", "val/clouds", "val/confusion_matrix", "test/confusion_matrix"]


def test_wandb_media_leaves_the_batches_of_other_modules_alone(monkeypatch):
    """The baselines train under the same trainer callbacks: tensor batches and modules without confusion
    matrices log nothing and raise nothing."""
    fake = type("Logger", (), {"log_image": lambda self, **kwargs: pytest.fail("logged media of a baseline")})()
    monkeypatch.setattr(WandbMedia, "_logger", staticmethod(lambda trainer: fake))
    media = WandbMedia()
    media.on_validation_batch_end(None, None, None, (torch.zeros(2, 3), torch.zeros(2)), 0)
    media.on_validation_end(None, torch.nn.Linear(1, 1))
    assert media._shown is None


# ------------------------------------------------------------------ Lightning end to end


def test_fit_learns_checkpoint_keeps_stats_and_predict_writes_csv(tmp_path):
    pl.seed_everything(0)
    data = CloudData(train=64, val=32, batch_size=16)
    model = tiny(optimizer={"lr": 3e-3})
    fit = trainer(tmp_path, max_epochs=6)
    fit.fit(model, datamodule=data)
    acc = float(fit.callback_metrics["val/acc"])
    assert {"train/loss", "val/loss", "val/acc", "val/acc_macro", "val/acc_class/ant"} <= set(fit.callback_metrics)
    assert acc > 0.5, acc  # chance is 0.25
    assert model.class_names == ["ant", "bee", "cat", "dog"]
    assert torch.allclose(model.model.normaliser.mean, data.latent_stats[0])

    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    restored = ARCClassifier.load_from_checkpoint(path)
    assert torch.equal(restored.model.normaliser.mean, model.model.normaliser.mean)
    assert torch.equal(restored.model.normaliser.std, model.model.normaliser.std)
    restored.eval()
    model.eval()
    batch = next(iter(data.val_dataloader()))
    assert torch.allclose(restored(batch), model(batch), atol=1e-5)

    out = tmp_path / "pred" / "predictions.csv"
    restored.class_names = data.class_names
    trainer(tmp_path, callbacks=[PredictionWriter(out)]).predict(restored, data.predict_dataloader(), return_predictions=False)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 32
    assert list(rows[0])[:7] == ["index", "label", "pred", "top1_class", "top1_prob", "top2_class", "top2_prob"]
    assert sorted(int(r["index"]) for r in rows) == list(range(32))
    first = rows[0]
    assert data.class_names[int(first["pred"])] == first["top1_class"]
    probs = [float(first[f"top{i}_prob"]) for i in range(1, 5)]
    assert probs == sorted(probs, reverse=True) and math.isclose(sum(probs), 1.0, abs_tol=1e-4)
    correct = sum(int(r["pred"]) == int(r["label"]) for r in rows)
    assert correct / 32 > 0.5


def test_predict_accepts_unknown_labels():
    model = tiny()
    model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
    model.eval()
    batch = batch_of([5, 9])
    batch.label = torch.tensor([-1, -1])  # new images without labels
    out = model.predict_step(batch, 0)
    assert out["label"].tolist() == [-1, -1]
    assert out["probs"].shape == (2, 4) and torch.allclose(out["probs"].sum(1), torch.ones(2))
    assert out["topk_class"].shape == (2, 4) and torch.equal(out["topk_class"][:, 0], out["probs"].argmax(1))


def test_datamodule_stats_do_not_overwrite_stats_already_set(tmp_path):
    data = CloudData(train=8, val=8, batch_size=8)
    model = tiny()
    model.set_latent_stats(torch.full((Z,), 1.0), torch.full((Z,), 2.0))
    trainer(tmp_path).validate(model, datamodule=data, verbose=False)
    assert torch.equal(model.model.normaliser.mean, torch.full((Z,), 1.0))
    fresh = tiny()
    trainer(tmp_path).validate(fresh, datamodule=data, verbose=False)
    assert torch.allclose(fresh.model.normaliser.mean, data.latent_stats[0])
    assert fresh.class_names == data.class_names


def test_label_smoothing_changes_only_the_training_loss():
    batch = batch_of([10, 12, 9, 20])
    plain, smooth = tiny(augment=None), tiny(augment=None, label_smoothing=0.2)
    smooth.load_state_dict(plain.state_dict())
    for model in (plain, smooth):
        model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
        model.eval()  # no drop-path: the same logits
    logits = plain.classify(batch.pos, batch.lat, batch.offset)
    assert torch.allclose(plain.training_loss(batch), F.cross_entropy(logits, batch.label), atol=1e-6)
    assert torch.allclose(smooth.training_loss(batch), F.cross_entropy(logits, batch.label, label_smoothing=0.2), atol=1e-6)
    assert torch.allclose(smooth._evaluate(batch, "test", 0), plain._evaluate(batch, "test", 0))


def test_block_learning_rate_and_onecycle_schedule(tmp_path):
    model = tiny(scheduler="onecycle", block_lr_scale=0.1, optimizer={"lr": 2e-3})
    data = CloudData()
    trainer(tmp_path, max_epochs=2).fit(model, datamodule=data)
    optimizer = model.optimizers().optimizer
    rest, blocks = optimizer.param_groups
    assert {id(p) for p in blocks["params"]} == {id(p) for n, p in model.named_parameters() if n.startswith("model.backbone.stages.")}
    assert blocks["max_lr"] == pytest.approx(2e-4) and rest["max_lr"] == pytest.approx(2e-3)
    assert blocks["lr"] < 2e-4 / 10  # annealed by the end of the run


def test_evaluation_views_average_augmented_copies():
    batch = batch_of([10, 12, 9, 20])
    one = tiny(augment=None)
    many = tiny(augment=None, eval_views=4, eval_augment={"mask": 0.3})
    many.load_state_dict(one.state_dict())
    for model in (one, many):
        model.set_latent_stats(torch.zeros(Z), torch.ones(Z))
        model.eval()
    single, voted = one.evaluate_logits(batch), many.evaluate_logits(batch)
    assert torch.allclose(single.exp().sum(1), torch.ones(4)) and torch.allclose(voted.exp().sum(1), torch.ones(4))
    assert not torch.allclose(single, voted)
    assert torch.equal(voted, many.evaluate_logits(batch))  # seeded views: the same every time
    with pytest.raises(ClassifierConfigError, match="eval_augment"):
        tiny(eval_views=2)


def test_shift_with_a_per_cloud_grid_warns():
    with pytest.warns(UserWarning, match="shift has no effect"):
        tiny(augment={"shift": 2.0})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny(augment={"shift": 2.0}, backbone=backbone(grid_origin="frame"))
    with pytest.raises(ClassifierConfigError, match="grid_origin"):
        tiny(backbone=backbone(grid_origin="image"))


def test_data_transforms_apply_per_stage_and_are_seeded():
    batch = batch_of([10, 12, 9, 20])
    model = tiny(augment=None, fit_transform={"push": 5.0}, test_transform={"shift": 3.0},
                 backbone=backbone(grid_origin="frame"))
    val, test = model.transformed(batch, "val", 0), model.transformed(batch, "test", 0)
    assert torch.equal(val.lat, batch.lat) and not torch.equal(val.pos, batch.pos)
    assert torch.equal(val.pos, model.transformed(batch, "val", 0).pos)  # the same val clouds every epoch
    assert not torch.equal(model.transformed(batch, "train", 0).pos, val.pos)
    moved = test.pos - batch.pos
    for start, end in zip(batch.starts().tolist(), batch.offset.tolist()):  # one shift per whole cloud
        assert torch.allclose(moved[start:end], moved[start].expand(end - start, 2), atol=1e-5)
    assert torch.equal(tiny(augment=None).transformed(batch, "test", 0).pos, batch.pos)
    with pytest.raises(ClassifierConfigError, match="points only"):
        tiny(fit_transform={"arcmix": 1.0})
    with pytest.warns(UserWarning, match="test_transform: shift has no effect"):
        tiny(test_transform={"shift": 2.0})


def test_test_transform_reaches_the_test_step(tmp_path):
    model = tiny(augment=None, test_transform={"mask": 0.5})
    seen = []
    original = model.classify
    model.classify = lambda pos, feat, offset: seen.append(len(pos)) or original(pos, feat, offset)
    data = CloudData(train=8, val=8, batch_size=8)
    model.set_latent_stats(*data.latent_stats)
    trainer(tmp_path).validate(model, data.val_dataloader(), verbose=False)
    full = sum(seen)
    seen.clear()
    trainer(tmp_path).test(model, data.test_dataloader(), verbose=False)
    assert sum(seen) < full  # the masked test clouds
