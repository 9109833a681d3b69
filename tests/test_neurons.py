"""Neuron-set conversions and the ranking tie rule (neuronloc.neurons) on a hand-worked
example: 2 layers x 3 neurons, set {(0, 1), (1, 0), (1, 2)} = flat ids {1, 3, 5}."""
import numpy as np
import pytest
import torch

from neuronloc.neurons import bottom_k, flat, ids_to_mask, mask_to_ids, to_ids, to_layer_dict, top_k, unflat

SHAPE = (2, 3)
MASK = torch.tensor([[False, True, False], [True, False, True]])
DICT = {0: [1], 1: [0, 2]}
IDS = [1, 3, 5]  # flat = layer * 3 + index


def test_flat_and_unflat_invert_each_other():
    assert [flat(l, i, 3) for l, idx in DICT.items() for i in idx] == IDS
    assert [unflat(i, 3) for i in IDS] == [(0, 1), (1, 0), (1, 2)]
    layers, index = unflat(torch.tensor(IDS), 3)
    assert layers.tolist() == [0, 1, 1] and index.tolist() == [1, 0, 2]
    assert unflat(torch.tensor(5), 3) == (1, 2)  # a 0-d tensor is one id


@pytest.mark.parametrize("form", [MASK, DICT, IDS, torch.tensor(IDS), np.array(IDS), {5, 1, 3}, (1, 3, 5)])
def test_every_form_converts_to_every_other(form):
    assert to_ids(form, SHAPE).tolist() == IDS
    assert torch.equal(ids_to_mask(form, SHAPE), MASK)
    assert to_layer_dict(form, SHAPE) == DICT
    assert mask_to_ids(ids_to_mask(form, SHAPE)).tolist() == IDS


def test_ids_keep_their_ranking_order():
    """A ranking (best first) stays in order; its layer dict lists each layer's neurons in rank order."""
    assert to_ids([5, 1, 3]).tolist() == [5, 1, 3]
    assert to_layer_dict([5, 1, 3], SHAPE) == {1: [2, 0], 0: [1]}


def test_empty_sets_and_missing_shape():
    assert to_layer_dict([], SHAPE) == {} == to_layer_dict(torch.zeros(SHAPE, dtype=torch.bool))
    assert to_ids([]).numel() == 0
    with pytest.raises(ValueError, match="shape"):
        to_layer_dict(IDS)
    with pytest.raises(ValueError, match="shape"):
        to_ids(DICT)
    with pytest.raises(ValueError, match=r"\[layer, neuron\]"):
        mask_to_ids(torch.ones(6, dtype=torch.bool))


@pytest.mark.parametrize("bad", [[6], [-1], {2: [0]}, {0: [3]}])
def test_out_of_range_neurons_raise(bad):
    with pytest.raises(IndexError, match="out of range"):
        to_ids(bad, SHAPE)


def test_top_bottom_k_ties_go_to_the_smaller_flat_id():
    s = torch.tensor([[1.0, 2.0], [2.0, 0.0]])  # flat [1, 2, 2, 0]
    assert top_k(s, 2).tolist() == [1, 2]
    assert bottom_k(s, 2).tolist() == [3, 0]
    assert top_k(torch.zeros(1, 3), 2).tolist() == [0, 1]
    assert bottom_k(torch.zeros(1, 3), 2).tolist() == [0, 1]


def test_nan_scores_rank_last_both_ways():
    """Layers a scorer skipped hold NaN: they are never picked before a real score."""
    s = torch.tensor([[float("nan"), float("nan")], [1.0, -1.0]])
    assert top_k(s, 3).tolist() == [2, 3, 0]
    assert bottom_k(s, 3).tolist() == [3, 2, 0]
    assert top_k(s, 10).tolist() == [2, 3, 0, 1]  # k beyond the size gives every id
