"""PatchInit: the ridge map from fit-space patches to latents, and the starting latents it writes into a group."""
import json
import sys
from pathlib import Path

import pytest
import torch

from arc.cloud import CloudBatch
from arc.field import FieldConfig, FieldGroup, FieldInputError
from arc.field.colour import to_fit_space_batch
from arc.field.latent_init import PatchInit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

FIELD = FieldConfig(latent_dim=4, latents_per_pixel=0.1)


def _clouds(images, weight, radius):
    """Clouds whose latents are exactly the linear map ``weight`` of their patches, at random positions."""
    g = torch.Generator().manual_seed(0)
    pos, lat, counts = [], [], []
    probe = PatchInit(weight, radius, "standardise")
    for image in images:
        h, w = image.shape[1:]
        p = torch.stack([torch.randint(0, h, (30,), generator=g), torch.randint(0, w, (30,), generator=g)], 1).float()
        pos.append(p)
        lat.append(probe.latents(image, p))
        counts.append(30)
    n = len(images)
    return CloudBatch(pos=torch.cat(pos), lat=torch.cat(lat), offset=torch.tensor(counts).cumsum(0), label=torch.zeros(n, dtype=torch.long),
                      size=torch.tensor([list(im.shape[1:]) for im in images]), index=torch.arange(n),
                      colour_mean=torch.zeros(n, 2), colour_std=torch.ones(n, 2))


def test_the_ridge_map_recovers_a_linear_map_of_the_patches():
    images = [torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    weight = torch.randn(2 * 9 + 1, 4, generator=torch.Generator().manual_seed(5))  # radius 1: 2 x 3 x 3 + 1
    learned = PatchInit.learn(images, _clouds(images, weight, 1), "standardise", radius=1, ridge=1e-8)
    torch.testing.assert_close(learned.weight, weight, rtol=1e-3, atol=1e-3)


def test_patches_are_the_fit_space_values_around_the_position():
    image = torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(2))
    fit_space = to_fit_space_batch(image[None], "standardise")[0][0, 0]
    features = PatchInit(torch.zeros(10, 4), 1, "standardise").features(image, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    torch.testing.assert_close(features[0, :9], fit_space[1:4, 2:5].reshape(-1))
    torch.testing.assert_close(features[1, :9].reshape(3, 3)[1:, 1:], fit_space[:2, :2])  # zero padding outside
    assert features[1, :3].abs().sum() == 0 and bool((features[:, 9] == 1).all())


def test_start_writes_each_image_s_starting_latents_into_the_group():
    images = [torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    init = PatchInit(torch.randn(10, FIELD.latent_dim, generator=torch.Generator().manual_seed(1)), 1, FIELD.colour)
    group = FieldGroup(images, FIELD, "train", [0, 1], 0, 0.25, 10**6)
    init.start(group, images)
    first = int(group.latent_offset[0])
    torch.testing.assert_close(group.latents[:first].detach(), init.latents(images[0], group.pos[:first]))
    torch.testing.assert_close(group.latents[first:].detach(), init.latents(images[1], group.pos[first:]))
    with pytest.raises(FieldInputError, match="reads images"):
        init.latents(torch.rand(1, 20), torch.zeros(1, 1))


def test_the_benchmark_compares_both_starts(tmp_path, capsys):
    import bench_latent_init

    from arc.field import new_decoder
    from arc.field.decoder import save_decoder

    save_decoder(tmp_path / "decoder.safetensors", new_decoder(FieldConfig(), 1, seed=0))
    result = bench_latent_init.main(["--source", "digits", "--option", "size=12", "--decoder", str(tmp_path / "decoder.safetensors"),
                                     "--learn-images", "6", "--learn-steps", "3", "--images", "3", "--steps", "2,4"])
    assert set(result["psnr_mean"]) == {"uniform", "patch"} and set(result["psnr_mean"]["patch"]) == {"2", "4"}
    assert result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
