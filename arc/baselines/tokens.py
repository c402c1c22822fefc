"""Hidden neurons as tokens: an INR's flat weight vector -> one feature vector per hidden neuron.

For an MLP of widths ``[d_0, h_1, ..., h_L, d_out]`` (:meth:`~arc.baselines.inr.INRConfig.shapes`),
neuron j of hidden layer l becomes the token

    [incoming weights W_l[j, :], bias b_l[j], outgoing weights W_{l+1}[:, j]]       (length in_l + 1 + out_l)

so a layer's tokens are [N, h_l, in_l + 1 + out_l]. Permuting the neurons of a hidden layer (its rows of
W_l and b_l and the columns of W_{l+1} alike) leaves the function unchanged; it permutes that layer's
tokens, but it would also reorder the entries of the neighbouring layers' tokens that index it. So the
entries that index another *hidden* layer are sorted (their multiset, which no permutation changes);
entries that index the inputs or the outputs (fixed order) are kept as they are. A reader with no
position over the neurons of a layer (attention, a mean) is then invariant to every hidden permutation
(``tests/test_weight_transformer.py``). The tokens of a [2, 32, 32, 1] SIREN: 32 of length 2 + 1 + 32
(raw input weights, sorted outgoing) and 32 of length 32 + 1 + 1 (sorted incoming, raw output weight).

Sorting keeps which values a neuron's links carry but not whom they link; :func:`hidden_links` gives
the hidden-to-hidden matrices themselves, for a reader that passes messages along them (a sum over
the neurons of a layer weighted by their links is invariant to permuting them).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from arc.baselines.inr import INRError, WeightStack


def token_widths(shapes: Sequence[tuple[int, int]]) -> list[int]:
    """Token length of each hidden layer for layers of ``shapes`` [(out, in), ...]: in + 1 + out of the next."""
    if len(shapes) < 2:
        raise INRError(f"neuron tokens need at least one hidden layer, got layers {list(shapes)}")
    return [inp + 1 + shapes[l + 1][0] for l, (_, inp) in enumerate(shapes[:-1])]


def neuron_tokens(flat: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Per hidden layer l, its tokens [N, h_l, :func:`token_widths`[l]] from flat weights [N, P] of
    layers ``shapes`` (the :class:`~arc.baselines.inr.WeightStack` layout; see the module docstring)."""
    token_widths(shapes)
    stack = WeightStack.from_flat(flat, shapes)
    last = len(shapes) - 2  # the last hidden layer
    tokens = []
    for l in range(last + 1):
        incoming = stack.weights[l]  # [N, h_l, in_l]
        if l > 0:  # indexes hidden layer l-1
            incoming = incoming.sort(dim=2).values
        outgoing = stack.weights[l + 1].transpose(1, 2)  # [N, h_l, out]
        if l < last:  # indexes hidden layer l+1
            outgoing = outgoing.sort(dim=2).values
        tokens.append(torch.cat([incoming, stack.biases[l].unsqueeze(2), outgoing], dim=2))
    return tokens


def hidden_links(flat: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """The weights between consecutive hidden layers, W_l [N, h_l, h_(l-1)] for l = 1 .. L-1, of flat
    weights [N, P] of layers ``shapes`` (empty for one hidden layer)."""
    token_widths(shapes)
    stack = WeightStack.from_flat(flat, shapes)
    return stack.weights[1:-1]
