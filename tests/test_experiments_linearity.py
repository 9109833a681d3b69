"""Notebook 04's glue (`experiments.linearity`) against hand-worked examples: the round robin of
factual prompts over relations (fake data and a fake answer check, so the expected list is
written out by hand), the linear-range cut of a sweep, estimators at the sampled neurons."""
from __future__ import annotations

import pytest
import torch

from neuronloc import neg
from neuronloc.experiments import linearity
from neuronloc.experiments.linearity import at_sampled, factual_prompts, on_linear
from neuronloc.tasks.loaders import Example


def _facts(relation: str, facts: list[str], patterns: list[int]) -> list[Example]:
    """Every fact in every pattern, as `tasks.loaders.pararel` returns them (facts x patterns)."""
    return [Example(f"{relation} {fact} p{j}", f" {fact.upper()}", f"{relation}/{fact}/p{j}", {"pattern": j, "fact": fact})
            for fact in facts for j in patterns]


def test_factual_prompts_one_pattern_per_fact_round_robin(monkeypatch):
    data = {"pararel/A": _facts("A", ["a1", "a2", "a3", "a4"], [5, 2, 9]),  # lowest pattern 2 (not the first listed)
            "pararel/B": _facts("B", ["b1", "b2"], [0, 3])}
    loads = []

    def fake_load(name, n=None, seed=0):
        loads.append((name, n, seed))
        return data[name]

    rejected = {"a2", "b1"}  # the model gets these wrong
    asked = []

    def fake_answered(lm, example):
        asked.append(example.uid)
        return example.meta["fact"] not in rejected

    monkeypatch.setattr(linearity, "load_examples", fake_load)
    monkeypatch.setattr(neg, "answered", fake_answered)
    # round robin on pattern 2 of A and pattern 0 of B: a1 b1 | a2 b2 | a3 | a4; b1 and a2 rejected
    kept = factual_prompts(None, ["pararel/A", "pararel/B"], n=10, scan=7, seed=3)
    assert [e.uid for e in kept] == ["A/a1/p2", "B/b2/p0", "A/a3/p2", "A/a4/p2"]
    assert loads == [("pararel/A", 7, 3), ("pararel/B", 7, 3)]
    asked.clear()
    kept = factual_prompts(None, ["pararel/A", "pararel/B"], n=2, scan=7, seed=3)
    assert [e.uid for e in kept] == ["A/a1/p2", "B/b2/p0"]
    assert asked == ["A/a1/p2", "B/b1/p0", "A/a2/p2", "B/b2/p0"]  # the model is not asked once n are kept


def test_on_linear_cuts_either_grid_to_the_range():
    full, linear = neg.grid(3, 1), neg.grid(2, 1)  # [-3 .. 3] (7 points), [-2 .. 2] (5 points)
    on_full = torch.arange(14.0).reshape(2, 7)
    on_lin = torch.arange(10.0).reshape(2, 5)
    assert on_linear(on_full, full, linear, 1.0).tolist() == [[2, 3, 4], [9, 10, 11]]  # Δ = -1, 0, 1
    assert on_linear(on_lin, full, linear, 1.0).tolist() == [[1, 2, 3], [6, 7, 8]]
    assert on_linear(on_lin, full, linear, 2.0).tolist() == on_lin.tolist()
    with pytest.raises(ValueError, match="fewer than 2"):
        on_linear(on_lin, full, linear, 0.5)


def test_at_sampled_picks_the_sampled_neurons_in_study_order():
    grads = [torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]), torch.tensor([[10.0, 11.0, 12.0], [13.0, 14.0, 15.0]])]
    studies = [{"neurgrad": grads[0], "lpi": torch.tensor([-1.0, -2.0]), "neurons": torch.tensor([4, 0])},  # (1, 1), (0, 0)
               {"neurgrad": grads[1], "lpi": torch.tensor([-3.0]), "neurons": torch.tensor([5])}]  # (1, 2)
    got = at_sampled(studies, "neurgrad")
    assert got.dtype == torch.float64 and got.tolist() == [4.0, 0.0, 15.0]
    assert at_sampled(studies, "lpi").tolist() == [-1.0, -2.0, -3.0]  # already at the sampled neurons
