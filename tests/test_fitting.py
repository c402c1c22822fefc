"""The batched fitting engine: batched == alone, pixel budget, manual gradient, pretraining, bad input."""
import math

import pytest
import torch

from arc.field import (
    FieldConfig,
    FieldGroup,
    FieldInputError,
    FitConfig,
    LatentGradient,
    PretrainConfig,
    fit_clouds,
    fit_group,
    new_decoder,
    pack_groups,
    pixel_neighbours,
    pretrain_decoder,
    sample_positions,
    to_fit_space,
)
from arc.field.fitting import cuda_tf32
from arc.field.group import z_order
from arc.field.prepare import prepare_images
from arc.seeding import item_generator

FIELD = FieldConfig(latent_dim=8, neighbours=4, latents_per_pixel=0.1)


def smooth_images(sizes, channels, seed=0):
    """Blurry random images (learnable in a few steps) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        small = torch.rand(1, channels, max(2, h // 3), max(2, w // 3), generator=g)
        out.append(torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0])
    return out


def fit_one_group(images, indices, decoder, steps=20):
    """All images in a single FieldGroup (one flat latent tensor, one Adam)."""
    group = FieldGroup(images, FIELD, "train", indices, 0, 0.25, 10**6)
    psnr = fit_group(group, decoder, FitConfig(steps=steps))
    return group.clouds(labels=list(range(len(images)))), psnr


def fit(images, indices, steps=20, budget=10**6, decoder=None, channels=1, **kw):
    decoder = decoder or new_decoder(FIELD, channels, seed=1)
    config = FitConfig(steps=steps, pixel_budget=budget, **kw)
    return fit_clouds(images, decoder, FIELD, config, "train", indices, labels=list(range(len(images))))


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_equals_alone(channels):
    sizes = [(12, 12), (16, 20), (9, 9)]
    images = smooth_images(sizes, channels)
    dec = new_decoder(FIELD, channels, seed=1)
    clouds, together_psnr = fit_one_group(images, [3, 4, 5], dec)
    clouds.validate()
    assert clouds.size.tolist() == [list(s) for s in sizes] and clouds.index.tolist() == [3, 4, 5]
    assert clouds.label.tolist() == [0, 1, 2] and clouds.colour_mean.shape == (3, channels)
    for b, (image, index) in enumerate(zip(images, [3, 4, 5])):
        alone = fit([image], [index], decoder=dec)
        one = clouds.cloud(b)
        assert torch.equal(one.pos, alone.clouds.pos)
        torch.testing.assert_close(one.lat, alone.clouds.lat, rtol=1e-4, atol=1e-6)
        assert abs(float(together_psnr[b] - alone.psnr[0])) < 1e-3
    moved = (clouds.lat.abs() > 2e-4).float().mean()
    assert moved > 0.5  # the fit did move the latents away from their U(+-1e-4) init


def test_fitting_improves_reconstruction():
    images = smooth_images([(16, 16)] * 3, 1, seed=3)
    dec, _ = pretrain_decoder(images[1:], FIELD, PretrainConfig(steps=60), "train", [1, 2])
    short = fit(images[:1], [0], steps=2, decoder=dec)
    long = fit(images[:1], [0], steps=100, decoder=dec)
    assert float(long.psnr[0]) > float(short.psnr[0]) + 3


def test_pack_groups_respects_budget():
    sizes = [(12, 12), (16, 20), (9, 9), (30, 30), (8, 8), (12, 12)]
    chunks = [max(1, math.floor(0.25 * h * w)) for h, w in sizes]  # 36, 80, 20, 225, 16, 36
    groups = pack_groups(sizes, 0.25, 120)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    for g in groups:
        assert len(g) == 1 or sum(chunks[i] for i in g) <= 120
    assert [3] in groups  # larger than the budget: alone
    assert groups == [[0, 1], [2], [3], [4, 5]]


def test_budget_packing_gives_same_result():
    images = smooth_images([(12, 12), (16, 20), (9, 9), (10, 14)], 1, seed=2)
    dec = new_decoder(FIELD, 1, seed=1)
    ref_clouds, ref_psnr = fit_one_group(images, [0, 1, 2, 3], dec)
    small = fit(images, [0, 1, 2, 3], budget=60, decoder=dec)  # several groups, passes split inside images
    torch.testing.assert_close(small.clouds.lat, ref_clouds.lat, rtol=1e-4, atol=1e-6)
    assert torch.equal(small.clouds.offset, ref_clouds.offset)
    torch.testing.assert_close(small.psnr, ref_psnr, atol=1e-3, rtol=0)


def test_split_step_equals_unsplit_step():
    image = smooth_images([(60, 80)], 1, seed=4)
    dec = new_decoder(FIELD, 1, seed=1)
    groups = [FieldGroup(image, FIELD, "train", [0], 0, 0.25, budget) for budget in (10**6, 97)]
    assert len(groups[0].passes(0)) == 1 and len(groups[1].passes(0)) == math.ceil(1200 / 97)
    grads = []
    for group in groups:
        grad = torch.zeros_like(group.latents)
        gradient = LatentGradient(dec, group)
        loss = sum(gradient.accumulate(group.latents.detach(), grad, p) for p in group.passes(0))
        grads.append((grad, loss))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("channels", [1, 3])
def test_manual_gradient_equals_autograd(channels):
    images = smooth_images([(12, 12), (9, 13)], channels, seed=5)
    dec = new_decoder(FIELD, channels, seed=2)
    group = FieldGroup(images, FIELD, "train", [0, 1], 0, 0.25, 50)
    with torch.no_grad():
        group.latents.normal_(generator=torch.Generator().manual_seed(0))
    for step in range(5):
        grad = torch.zeros_like(group.latents)
        manual = sum(LatentGradient(dec, group, micro_batch=17).accumulate(group.latents.detach(), grad, p) for p in group.passes(step))
        group.latents.grad = None
        auto = sum(group.loss(dec, group.latents, p) for p in group.passes(step))
        auto.backward()
        torch.testing.assert_close(grad, group.latents.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(float(manual), float(auto.detach()), rtol=1e-5, atol=0)


def test_low_precision_gradient_is_close():
    images = smooth_images([(12, 12)], 1, seed=8)
    dec = new_decoder(FIELD, 1, seed=2)
    group = FieldGroup(images, FIELD, "train", [0], 0, 0.25, 10**6)
    with torch.no_grad():
        group.latents.normal_(generator=torch.Generator().manual_seed(0))
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        grad = torch.zeros_like(group.latents)
        LatentGradient(dec, group, dtype).accumulate(group.latents.detach(), grad, group.passes(0)[0])
        grads.append(grad)
    assert grads[1].dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert float(cosine) > 0.99


def test_loss_is_sum_of_per_image_means():
    images = smooth_images([(8, 8), (10, 9)], 1, seed=6)
    dec = new_decoder(FIELD, 1, seed=2)
    group = FieldGroup(images, FIELD, "train", [0, 1], 0, 0.25, 10**6)
    step = 1
    total = sum(float(group.loss(dec, group.latents, p).detach()) for p in group.passes(step))
    expected = 0.0
    for b in range(2):
        rows = torch.nonzero(group.image == b).flatten()
        chunk = max(1, math.floor(0.25 * rows.numel()))
        phase_rows = []
        for p in group.passes(step):
            phase_rows += [r for r in range(p.start, p.stop) if group.image[r] == b]
        assert len(phase_rows) == min(chunk, rows.numel() - (step % math.ceil(rows.numel() / chunk)) * chunk)
        from arc.field.group import Pass

        pred = torch.cat([group.predict(dec, group.latents, Pass(r, r + 1)) for r in phase_rows])
        expected += float((pred - group.target[phase_rows]).square().mean())
    assert total == pytest.approx(expected, rel=1e-5)


def test_batched_preparation_equals_preparing_alone():
    g = torch.Generator().manual_seed(3)
    sparse = torch.zeros(1, 12, 12)
    sparse[0, 5, 5] = 1.0  # 8 non-zero-gradient pixels: k capped at 8 (the constant image: n uniform)
    images = smooth_images([(12, 12), (16, 20), (12, 12), (9, 9)], 1, seed=9) + [sparse, torch.full((1, 12, 12), 0.4)]
    images.append(torch.rand(1, 12, 12, generator=g))
    indices = [7, 1, 2, 30, 4, 5, 6]
    together = prepare_images(images, FIELD, 0, "train", indices)
    alone = [prepare_images([im], FIELD, 0, "train", [i]) for im, i in zip(images, indices)]
    for name in ("sizes", "latent_counts", "target", "mean", "std", "pos", "lat", "perm", "nbr"):
        assert torch.equal(getattr(together, name), torch.cat([getattr(a, name) for a in alone])), name
    assert together.latent_counts.tolist() == [14, 32, 14, 8, 8, 4, 14]


def test_prepared_neighbours_and_positions_match_the_single_image_functions():
    image = smooth_images([(11, 13)], 3, seed=4)[0]
    prepared = prepare_images([image, image], FIELD, 0, "train", [0, 1])
    target, _, _ = to_fit_space(image, FIELD.colour)
    pos = sample_positions(target, FIELD, item_generator(0, "train", 1))
    k = pos.shape[0]
    assert torch.equal(prepared.pos[k:], pos)
    assert torch.equal(prepared.nbr[143:], pixel_neighbours(pos, 11, 13, FIELD.neighbours))
    assert torch.equal(prepared.target[143:], target.reshape(3, -1).t())


def test_pixel_schedule_cycles_disjoint_chunks():
    image = smooth_images([(7, 9)], 1)  # 63 pixels, m = 15, 5 chunks (the last has 3 pixels)
    group = FieldGroup(image, FIELD, "train", [0], 0, 0.25, 10**6)
    seen = []
    for step in range(5):
        rows = [r for p in group.passes(step) for r in range(p.start, p.stop)]
        seen.append(group.pixel[rows].tolist())
    assert [len(s) for s in seen] == [15, 15, 15, 15, 3]
    assert sorted(sum(seen, [])) == list(range(63))
    assert [r for p in group.passes(7) for r in range(p.start, p.stop)] == [
        r for p in group.passes(2) for r in range(p.start, p.stop)
    ]


def test_one_step_on_large_image_with_small_budget():
    image = torch.zeros(1, 1200, 1600)
    image[0, 300:900, 400:1200] = torch.linspace(0, 1, 800)[None]
    budget = 50_000
    group = FieldGroup([image], FieldConfig(latent_dim=4, neighbours=4, latents_per_pixel=0.05), "train", [0], 0, 0.25, budget)
    passes = group.passes(0)
    assert len(passes) == math.ceil(480_000 / budget) and max(p.size for p in passes) <= budget
    assert max(p.size for p in group.all_passes()) <= budget
    dec = new_decoder(group.field, 1, seed=0)
    gradient = LatentGradient(dec, group)
    grad = torch.zeros_like(group.latents)
    for piece in passes:
        gradient.accumulate(group.latents.detach(), grad, piece)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_pretrain_improves_psnr():
    images = smooth_images([(10, 10), (12, 9), (8, 8)], 1, seed=7)
    progress = []
    _, early = pretrain_decoder(images, FIELD, PretrainConfig(steps=3), "train", [0, 1, 2])
    dec, late = pretrain_decoder(images, FIELD, PretrainConfig(steps=80), "train", [0, 1, 2], progress=lambda s, l: progress.append(l))
    assert len(progress) == 80 and progress[-1] < progress[0]
    assert float(late.mean()) > float(early.mean()) + 3
    assert not any(p.requires_grad is False for p in dec.parameters())


def test_progress_and_labels_default():
    images = smooth_images([(8, 8)] * 3, 1)
    calls = []
    res = fit_clouds(images, new_decoder(FIELD, 1, 0), FIELD, FitConfig(steps=2, pixel_budget=20), "val", [0, 1, 2],
                     progress=lambda done, psnr: calls.append((done, psnr.numel())))
    assert calls == [(1, 1), (2, 1), (3, 1)]
    assert res.clouds.label.tolist() == [-1, -1, -1]


def test_bad_input():
    dec = new_decoder(FIELD, 1, 0)
    nan = torch.rand(1, 8, 8)
    nan[0, 1, 1] = float("nan")
    with pytest.raises(FieldInputError, match="NaN"):
        fit([nan], [0], decoder=dec)
    with pytest.raises(FieldInputError, match="fewer than the 4 neighbours"):
        fit([torch.rand(1, 1, 3)], [0], decoder=dec)
    with pytest.raises(FieldInputError, match="1-channel decoder"):
        fit([torch.rand(3, 8, 8)], [0], decoder=dec)
    with pytest.raises(FieldInputError, match="source indices"):
        fit([torch.rand(1, 8, 8)], [0, 1], decoder=dec)
    with pytest.raises(FieldInputError, match="does not match the field"):
        fit([torch.rand(1, 8, 8)], [0], decoder=new_decoder(FieldConfig(latent_dim=5), 1, 0))


def test_tf32_context_sets_and_restores_the_cuda_matmul_flag():
    before = torch.backends.cuda.matmul.allow_tf32
    with cuda_tf32(not before):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before)
    assert torch.backends.cuda.matmul.allow_tf32 is before
    first, second = cuda_tf32(not before), cuda_tf32(not before)  # overlapping, as shard threads do
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert torch.backends.cuda.matmul.allow_tf32 is (not before), "the first to leave must not restore"
    second.__exit__(None, None, None)
    assert torch.backends.cuda.matmul.allow_tf32 is before
    with cuda_tf32(True), pytest.raises(RuntimeError, match="different matmul precisions"):
        with cuda_tf32(False):
            pass
    assert torch.backends.cuda.matmul.allow_tf32 is before
    assert FitConfig(precision="tf32").precision == "tf32"
    with pytest.raises(ValueError, match="'tf32'"):
        FitConfig(precision="tf16")


def test_running_out_of_gpu_memory_names_the_pixel_budget(monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LatentGradient, "accumulate", no_memory)
    group = FieldGroup(smooth_images([(8, 8)], 1), FIELD, "train", [0], 0, 0.25, 777)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="pixel_budget=777 .* lower it"):
        fit_group(group, new_decoder(FIELD, 1, seed=0), FitConfig(steps=2, engine="dense"))


def test_pretraining_killed_midway_resumes_to_the_same_decoder(tmp_path):
    """A run killed after its step-8 checkpoint resumes from it and ends with the uninterrupted run's bits."""
    images = smooth_images([(10, 10), (12, 9), (8, 8)], 1, seed=7)
    pretrain, checkpoint = PretrainConfig(steps=12), tmp_path / "decoder.progress"
    whole, whole_psnr = pretrain_decoder(images, FIELD, pretrain, "train", [0, 1, 2])

    def kill_at_step_10(step: int, loss: float) -> None:
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain_decoder(images, FIELD, pretrain, "train", [0, 1, 2], progress=kill_at_step_10,
                         checkpoint=checkpoint, checkpoint_every=4)
    assert torch.load(checkpoint, weights_only=True)["step"] == 8
    steps = []
    resumed, psnr = pretrain_decoder(images, FIELD, pretrain, "train", [0, 1, 2], progress=lambda s, l: steps.append(s),
                                     checkpoint=checkpoint, checkpoint_every=4)
    assert steps == [9, 10, 11, 12] and not checkpoint.exists()
    for ours, theirs in zip(resumed.state_dict().values(), whole.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert torch.equal(psnr, whole_psnr)
    checkpoint.write_bytes(b"truncated")  # an unusable file: start over, same result
    again, _ = pretrain_decoder(images, FIELD, pretrain, "train", [0, 1, 2], checkpoint=checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), whole.state_dict().values()))


def test_a_large_image_steps_through_its_chunks_in_z_order(monkeypatch):
    """Above LOCAL_ORDER_PIXELS per step an image's chunk is laid out in Z-order of its grid (cache locality): same
    pixels per step, same fit up to the order of the sums."""
    import arc.field.group as group_module

    image = smooth_images([(40, 50)], 1, seed=2)
    decoder = new_decoder(FIELD, 1, seed=6)
    groups, fits = {}, {}
    for name, threshold in (("permutation", 10**9), ("z-order", 0)):
        monkeypatch.setattr(group_module, "LOCAL_ORDER_PIXELS", threshold)
        groups[name] = FieldGroup(image, FIELD, "train", [0], 0, 0.25, 10**6)
        fits[name] = fit_clouds(image, decoder, FIELD, FitConfig(steps=8), "train", [0])
    for step in range(4):
        rows = [groups[name].passes(step)[0] for name in groups]
        pixels = [groups[name].pixel[p.start : p.stop] for name, p in zip(groups, rows)]
        assert torch.equal(pixels[0].sort().values, pixels[1].sort().values) and not torch.equal(pixels[0], pixels[1])
        row, col = pixels[1] // 50, pixels[1] % 50
        assert torch.equal(z_order(torch.stack([row, col], 1)).diff().sign(), torch.ones(len(row) - 1, dtype=torch.long))
    torch.testing.assert_close(fits["z-order"].clouds.lat, fits["permutation"].clouds.lat, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_z_order_interleaves_the_bits_of_the_coordinates(dims):
    coords = torch.cartesian_prod(*[torch.arange(4)] * dims).reshape(-1, dims)
    codes = z_order(coords)
    assert torch.equal(codes.sort().values, torch.arange(4**dims))  # a bijection of the 4^D cells
    first_cell = codes < 2**dims  # the first 2^D codes fill the unit cube at the origin
    assert torch.equal(coords[first_cell].amax(0), torch.ones(dims, dtype=torch.long))
    assert int(z_order(torch.tensor([[0, 1]]))) == 1 and int(z_order(torch.tensor([[1, 0]]))) == 2
    with pytest.raises(ValueError, match="more than 63 bits"):
        z_order(torch.tensor([[2**21, 0, 0]]))
