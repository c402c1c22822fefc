"""The permutation-aware reader: an INR's hidden neurons as tokens into a small transformer.

In the spirit of the weight-space work that reads networks neuron by neuron (the neural functionals
of DWSNets, neural functional transformers, graph metanetworks): :func:`arc.baselines.tokens.neuron_tokens`
turns a flat weight vector into one token per hidden neuron (incoming weights, bias, outgoing
weights), each layer's tokens are embedded by a linear map of their own plus a learned layer
embedding, one message step along the hidden-to-hidden weights (:func:`arc.baselines.tokens.hidden_links`:
neuron j of layer l gets Σ_i W_l[j, i] h_i from layer l-1 and Σ_k W_(l+1)[k, j] h_k from layer l+1,
each / fan, through a linear map per link and direction) tells each token whom it is linked to, a
pre-norm transformer encoder mixes all tokens, and their mean feeds a linear head.
There is no position over the neurons of a layer, so the logits are invariant to permuting the
hidden neurons of the INR (``tests/test_weight_transformer.py``); read it with the data module's
``standardise: tensor`` (one scale per weight tensor keeps that invariance; per-dimension statistics do not).

:class:`NeuronTransformer` is the network (plain ``nn.Module``); :class:`WeightTransformerClassifier`
the recipe: cross-entropy, AdamW with a cosine decay, the log keys of :class:`WeightClassifier`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from arc.baseline_training.weight_mlp import WeightClassifier
from arc.baselines.tokens import hidden_links, neuron_tokens, token_widths


def layer_shapes(widths: Sequence[int]) -> list[tuple[int, int]]:
    """(out, in) of every layer of an MLP of ``widths`` [d_in, *hidden, d_out]."""
    widths = [int(w) for w in widths]
    if len(widths) < 3 or min(widths) < 1:
        raise ValueError(f"model.widths must be the INR's widths [inputs, *hidden, outputs] with a hidden layer, got {widths}")
    return list(zip(widths[1:], widths[:-1]))


class NeuronTransformer(nn.Module):
    """Flat INR weights [N, P] of an MLP of ``widths`` -> logits [N, classes] (see the module docstring)."""

    def __init__(self, widths: Sequence[int], num_classes: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 2 or dim < 1 or depth < 1 or heads < 1 or dim % heads or not 0.0 <= dropout < 1.0:
            raise ValueError(f"NeuronTransformer needs num_classes >= 2, depth >= 1, dim divisible by heads and dropout in "
                             f"[0, 1); got {num_classes}, dim {dim}, depth {depth}, heads {heads}, dropout {dropout}")
        self.shapes = layer_shapes(widths)
        self.embed = nn.ModuleList(nn.Linear(width, dim) for width in token_widths(self.shapes))
        self.layer_embedding = nn.Parameter(torch.randn(len(self.embed), dim) * 0.02)
        self.from_below = nn.ModuleList(nn.Linear(dim, dim) for _ in self.embed[1:])  # link l: layer l-1 -> l
        self.from_above = nn.ModuleList(nn.Linear(dim, dim) for _ in self.embed[1:])  # link l: layer l -> l-1
        block = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    @property
    def param_count(self) -> int:
        """P, the length of the flat weight vectors it reads."""
        return sum(o * i + o for o, i in self.shapes)

    def forward(self, weights: Tensor) -> Tensor:
        tokens = [embed(layer) + self.layer_embedding[l] for l, (embed, layer)
                  in enumerate(zip(self.embed, neuron_tokens(weights, self.shapes)))]
        mixed = list(tokens)
        for l, links in enumerate(hidden_links(weights, self.shapes), start=1):  # links [N, h_l, h_(l-1)]
            mixed[l] = mixed[l] + self.from_below[l - 1](links @ tokens[l - 1] / links.shape[2])
            mixed[l - 1] = mixed[l - 1] + self.from_above[l - 1](links.transpose(1, 2) @ tokens[l] / links.shape[1])
        return self.head(self.encoder(torch.cat(mixed, dim=1)).mean(dim=1))


class WeightTransformerClassifier(WeightClassifier):
    """Train :class:`NeuronTransformer` on (weight vector, label) batches.

    num_classes, latent_dim (P), class_names: linked from the DataModule by the CLI.
    widths: the INR's widths [inputs, *hidden, outputs] (e.g. [2, 32, 32, 1] for images, [1, 32, 32, 1] for 1-D
    signals, [3, 32, 32, 1] for volumes; must give P = latent_dim).
    dim, depth, heads, dropout: the transformer. lr, weight_decay: AdamW, cosine decay over
    ``trainer.max_epochs``. seed: initialisation seed (default: the training seed).
    """

    def __init__(
        self,
        num_classes: int,
        latent_dim: int,
        widths: Sequence[int] = (2, 32, 32, 1),
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        class_names: Optional[list[str]] = None,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        self.net = self.initialised(seed, lambda: NeuronTransformer(widths, num_classes, dim, depth, heads, dropout))
        if self.net.param_count != latent_dim:
            raise ValueError(f"model.widths {list(widths)} give weight vectors of {self.net.param_count} values, the data's "
                             f"have {latent_dim}: set model.widths to the INR's [inputs, *data.inr.hidden, channels] "
                             "(inputs: the samples' D, 1 signals / 2 images / 3 volumes, or 2 x fourier_features)")

    def forward(self, weights: Tensor) -> Tensor:
        return self.net(weights)

    def configure_optimizers(self) -> dict:
        return self.adamw_cosine()
