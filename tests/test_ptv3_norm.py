"""The point norms equal torch's and give the same bits for any number of CPU threads."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ptv3.norm import PointBatchNorm, PointLayerNorm


def _grads(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    out = module(x)
    (out * upstream).sum().backward()
    return out.detach(), x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("momentum", [0.1, None])
def test_point_batch_norm_equals_batch_norm(momentum):
    g = torch.Generator().manual_seed(0)
    x, up = torch.randn(300, 16, generator=g) * 3 + 1, torch.randn(300, 16, generator=g)
    ours, ref = PointBatchNorm(16, eps=1e-3, momentum=momentum), nn.BatchNorm1d(16, eps=1e-3, momentum=momentum)
    for _ in range(2):  # running statistics over two steps
        for a, b in zip(_grads(ours, x, up), _grads(ref, x, up)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == 2
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_point_layer_norm_equals_layer_norm():
    g = torch.Generator().manual_seed(1)
    x, up = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    ours, ref = PointLayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-1, 1)
    ours.load_state_dict(ref.state_dict())
    for a, b in zip(_grads(ours, x, up), _grads(ref, x, up)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", [PointBatchNorm, PointLayerNorm])
def test_results_do_not_depend_on_the_thread_count(norm):
    """Large enough for torch to split the rows between threads (its fused kernels then change bits)."""
    g = torch.Generator().manual_seed(2)
    x, up = torch.randn(20000, 64, generator=g), torch.randn(20000, 64, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 4):
            torch.set_num_threads(count)
            results.append(_grads(norm(64), x, up))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_a_single_point_in_training_normalises_to_the_bias_and_updates_the_running_stats():
    """One small cloud pooled to one voxel: torch's BatchNorm refuses one value per channel in training."""
    with pytest.raises(ValueError, match="more than 1 value"):
        torch.nn.BatchNorm1d(4).train()(torch.randn(1, 4))
    norm = PointBatchNorm(4).train()
    with torch.no_grad():
        norm.bias.copy_(torch.arange(4.0))
    x = torch.randn(1, 4)
    assert torch.equal(norm(x), norm.bias.detach().expand(1, 4))
    assert torch.allclose(norm.running_mean, 0.1 * x[0]) and int(norm.num_batches_tracked) == 1
