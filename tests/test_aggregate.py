"""Aggregators on hand-worked arrays (neuronloc.attribution.aggregate)."""
import torch

from neuronloc.interventions import RATIOS, split_budget as budget_split
from neuronloc.attribution.aggregate import ace, kn_select, scale_z, sigma_mask


def test_ace_hand_example():
    # ex0 = [5, 3, 1, 0, -2, -4]: G0 = {0, 1}, B0 = {5, 4}
    # ex1 = [4, -1, 2, -3, 6, 0]: G1 = {4, 0}, B1 = {3, 1}
    # ambiguous (in some G and some B): 1 (G0, B1) and 4 (G1, B0) -> 0
    # ACE: n0 = 5 + 4 = 9; n2 never selected -> 0; n3 = -3 (B1 only); n5 = -4 (B0 only)
    es = torch.tensor([[[5.0, 3, 1, 0, -2, -4]], [[4.0, -1, 2, -3, 6, 0]]])
    res = ace(es, z=2, k=2)
    assert res.scores.tolist() == [[9.0, 0.0, 0.0, -3.0, 0.0, -4.0]]
    assert res.ambiguous.tolist() == [[False, True, False, False, True, False]]
    assert res.good.tolist() == [0]          # top 2 = [0, 1], but ACE(1) = 0 is dropped
    assert res.bad.tolist() == [5, 3]        # most negative first
    assert res.scores.shape == (1, 6)


def test_ace_z_larger_than_half_makes_overlap_ambiguous():
    # z = 3 of 4: in one example the middle neurons are in both G and B
    res = ace(torch.tensor([[[4.0, 3.0, 2.0, 1.0]]]), z=3, k=4)
    assert res.ambiguous.tolist() == [[False, True, True, False]]
    assert res.scores.tolist() == [[4.0, 0.0, 0.0, 1.0]]
    assert res.good.tolist() == [0, 3] and res.bad.tolist() == []


def test_scale_z():
    assert scale_z(32 * 11008) == 5000                              # the paper's model
    assert scale_z(30 * 1536) == 654                                # 5000 * 46080 / 352256 = 654.07
    assert scale_z(3 * 48) == 100                                   # 2.04 -> at least k = 100
    assert scale_z(3 * 48, k=10) == 10
    assert scale_z(50, k=100) == 50                                 # never more than all neurons


def test_kn_select():
    es = torch.tensor([
        [[10.0, 3.0, 1.0, -5.0]],    # max 10, keep > 2.0:  {0, 1}
        [[2.0, 0.5, 8.0, 0.0]],      # max 8,  keep > 1.6:  {0, 2}
        [[-1.0, 9.0, 0.9, 0.0]],     # max 9,  keep > 1.8:  {1}
    ])
    # counts: n0 = 2, n1 = 2, n2 = 1, n3 = 0
    # means:  n0 = 11/3 = 3.67, n1 = 12.5/3 = 4.17, n2 = 9.9/3 = 3.3
    sel = kn_select(es, threshold=0.2, share=0.5)                  # >= 1.5 examples -> count >= 2
    assert sel.ids.tolist() == [1, 0]                               # count tie -> mean decides
    assert sel.mask.tolist() == [[True, True, False, False]]
    sel = kn_select(es, threshold=0.2, share=0.3)                   # count >= 1
    assert sel.ids.tolist() == [1, 0, 2]                            # count before mean (n2 mean 3.3 < n0 but count 1)
    assert kn_select(es, share=0.3, k=1).ids.tolist() == [1]
    assert kn_select(es, share=0.3, k=1).mask.tolist() == [[False, True, False, False]]
    # an example with no positive score keeps nothing (its threshold would be negative)
    neg = torch.tensor([[[-1.0, -2.0, -3.0, -4.0]]])
    assert kn_select(neg, share=0.1).ids.tolist() == []


def test_kn_select_ranks_as_a_sort_by_count_then_mean_then_id():
    # the slow reference: Python's sort of every kept neuron by (-count, -mean score, id);
    # integer scores make ties in both count and mean common
    gen = torch.Generator().manual_seed(0)
    for E, share, k in ((5, 0.4, None), (8, 0.25, None), (6, 0.5, 7), (3, 0.0, None)):
        es = torch.randint(-3, 6, (E, 3, 16), generator=gen).double()
        flat = es.reshape(E, -1)
        top = flat.max(1, keepdim=True).values
        count = ((flat > 0.2 * top) & (top > 0)).sum(0)
        mean = flat.mean(0)
        ref = sorted((i for i in range(flat.shape[1]) if count[i] >= share * E), key=lambda i: (-int(count[i]), -float(mean[i]), i))
        sel = kn_select(es, threshold=0.2, share=share, k=k)
        assert sel.ids.tolist() == ref[:k]
        assert sel.mask.reshape(-1).nonzero().reshape(-1).tolist() == sorted(ref[:k])


def test_sigma_mask_both_spreads():
    # scores [0, 0, 0, 0, 10]: mean 2, deviations [-2, -2, -2, -2, 8]
    # population var = (4 * 4 + 64) / 5 = 16, std = 4
    s = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0]])
    assert sigma_mask(s, sigma=0.4).tolist() == [[False] * 4 + [True]]            # > 6.4
    assert sigma_mask(s, sigma=0.4, spread="std").tolist() == [[True] * 5]        # > 1.6
    assert sigma_mask(s, sigma=1.0).tolist() == [[False] * 5]                     # > 16
    assert sigma_mask(s, sigma=1.0, spread="std").tolist() == [[False] * 4 + [True]]  # > 4
    assert sigma_mask(s).shape == (1, 5)


def test_budget_split():
    good, bad = torch.arange(10, 20), torch.arange(20, 30)
    g, b = budget_split(good, bad, budget=5, ratio=0.5)             # round(2.5) = 3 good, 2 bad
    assert g.tolist() == [10, 11, 12] and b.tolist() == [20, 21]
    g, b = budget_split(good, bad, budget=5, ratio=0.0)
    assert g.tolist() == [] and b.tolist() == [20, 21, 22, 23, 24]
    g, b = budget_split(good, bad, budget=5, ratio=1.0)
    assert g.tolist() == [10, 11, 12, 13, 14] and b.tolist() == []
    assert len(RATIOS) == 11 and RATIOS[0] == 0.0 and RATIOS[-1] == 1.0
    assert [len(budget_split(good, bad, 10, r)[0]) for r in RATIOS] == list(range(11))
