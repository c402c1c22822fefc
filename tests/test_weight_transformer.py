"""The permutation-aware reader: neuron tokens, invariance to permuting a SIREN's hidden neurons, training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from arc.baseline_training.weight_transformer import NeuronTransformer, WeightTransformerClassifier
from arc.baseline_training.weights_data import WeightDataModule, standardise, tensor_statistics
from arc.baselines.fitting import step_inputs
from arc.baselines.inr import INRConfig, WeightStack, forward, init_stack
from arc.baselines.tokens import hidden_links, neuron_tokens, token_widths

SIREN = INRConfig(hidden=(32, 32))
SHAPES = SIREN.shapes(1)


def _sirens(n: int) -> WeightStack:
    stack = init_stack(SIREN, 1, [torch.Generator().manual_seed(i) for i in range(n)])
    return WeightStack([w + 0.05 * torch.randn_like(w) for w in stack.weights], [b + 0.05 * torch.randn_like(b) for b in stack.biases])


def _permute_hidden(stack: WeightStack, generator: torch.Generator) -> WeightStack:
    """The same INRs with the neurons of every hidden layer permuted (rows of W_l, b_l and columns of W_{l+1})."""
    weights, biases = [w.clone() for w in stack.weights], [b.clone() for b in stack.biases]
    for layer in range(len(weights) - 1):
        perm = torch.randperm(weights[layer].shape[1], generator=generator)
        weights[layer], biases[layer] = weights[layer][:, perm], biases[layer][:, perm]
        weights[layer + 1] = weights[layer + 1][:, :, perm]
    return WeightStack(weights, biases)


def test_neuron_tokens_of_a_siren():
    stack = _sirens(3)
    tokens = neuron_tokens(stack.flat(), SHAPES)
    assert token_widths(SHAPES) == [2 + 1 + 32, 32 + 1 + 1] and [t.shape for t in tokens] == [(3, 32, 35), (3, 32, 34)]
    torch.testing.assert_close(tokens[0][:, :, :2], stack.weights[0])  # input weights raw
    torch.testing.assert_close(tokens[1][:, :, 33], stack.weights[2][:, 0, :])  # output weights raw
    torch.testing.assert_close(tokens[0][:, 5, 3:], stack.weights[1][:, :, 5].sort(dim=1).values)  # hidden ones sorted
    links = hidden_links(stack.flat(), SHAPES)
    assert len(links) == 1 and torch.equal(links[0], stack.weights[1])
    with pytest.raises(ValueError, match="at least one hidden layer"):
        token_widths([(1, 2)])


def test_permuting_hidden_neurons_leaves_the_logits_unchanged():
    stack = _sirens(4)
    permuted = _permute_hidden(stack, torch.Generator().manual_seed(1))
    grid = step_inputs(SIREN, 8, 8)
    torch.testing.assert_close(forward(SIREN, permuted, grid)[0], forward(SIREN, stack, grid)[0], atol=1e-5, rtol=0)
    assert not torch.equal(permuted.flat(), stack.flat())
    train = torch.cat([stack.flat(), permuted.flat()])
    mean, std = tensor_statistics(train, SHAPES)  # per-tensor standardisation keeps the invariance
    torch.manual_seed(0)
    net = NeuronTransformer([2, 32, 32, 1], num_classes=10).eval()
    logits = net(standardise(stack.flat(), mean, std))
    torch.testing.assert_close(net(standardise(permuted.flat(), mean, std)), logits, atol=1e-5, rtol=1e-5)
    assert logits.shape == (4, 10) and not torch.allclose(logits[0], logits[1])


def test_the_transformer_learns_the_weights_of_separable_images(tmp_path):
    import lightning.pytorch as pl

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.random((60, 6, 6)) * 0.3
    x[y == 0, :, :3] += 0.7
    x[y == 1, :, 3:] += 0.7
    np.savez(tmp_path / "two.npz", x_train=x[:48].astype(np.float32), y_train=y[:48], x_test=x[48:].astype(np.float32),
             y_test=y[48:])
    data = WeightDataModule(source=f"npz:{tmp_path / 'two.npz'}", root=str(tmp_path / "root"), inr={"hidden": [8]},
                            fit={"steps": 30, "init": "shared"}, batch_size=8, val_fraction=0.2, standardise="tensor")
    with pytest.raises(ValueError, match=r"model.widths \[2, 16, 1\] give weight vectors of 65 values, the data's have 33"):
        WeightTransformerClassifier(data.num_classes, data.latent_dim, widths=[2, 16, 1])
    model = WeightTransformerClassifier(data.num_classes, data.latent_dim, widths=[2, 8, 1], dim=16, depth=1, heads=2,
                                        dropout=0.0, lr=3e-3, seed=0)
    trainer = pl.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    assert trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"] >= 0.8
    with pytest.raises(ValueError, match="data.standardise"):
        WeightDataModule(standardise="layer")
