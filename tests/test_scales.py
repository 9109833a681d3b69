"""Scale presets: one place for every count, read by each notebook's SCALE parameter."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from neuronloc import scales


def test_get_returns_the_presets_by_name():
    assert scales.get("smoke") is scales.SMOKE
    assert scales.get("default") is scales.DEFAULT
    assert scales.get("paper") is scales.PAPER
    assert scales.get(scales.DEFAULT) is scales.DEFAULT
    assert [s.name for s in scales.SCALES.values()] == ["smoke", "default", "paper"]


def test_unknown_scale_lists_the_known_ones():
    with pytest.raises(ValueError, match="'smoke', 'default', 'paper'"):
        scales.get("huge")


def test_presets_are_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        scales.DEFAULT.neuronllm.n_eval = 3
    assert len({hash(s) for s in scales.SCALES.values()}) == 3
    variant = dataclasses.replace(scales.SMOKE, neuronllm=dataclasses.replace(scales.SMOKE.neuronllm, n_eval=2))
    assert variant.neuronllm.n_eval == 2 and scales.SMOKE.neuronllm.n_eval == 4


def test_paper_scale_has_the_papers_counts():
    p = scales.PAPER
    assert (p.neuronllm.n_train, p.neuronllm.ig_steps, p.neuronllm.k) == (5, 16, 100)
    # evaluation: the paper's 100 examples per task, ours 300 so that intervals can decide (issue 19 item 4);
    # the default scale evaluates 280 and no smaller scale asks for more
    assert p.neuronllm.n_eval == 300 >= scales.DEFAULT.neuronllm.n_eval
    assert p.z(352_256) == 5000 and p.k(352_256) == 100  # NeuronLLM §3.4, §4.4 (LLaMA 2-7B)
    assert len(p.neuronllm.ratios) == 11 and p.neuronllm.ratios[0] == 0 and p.neuronllm.ratios[-1] == 1
    assert (p.cnl.ig_steps, p.cnl.sigma, p.cnl.localize["gsm8k"], p.cnl.localize["emotion"]) == (19, 6.0, 1600, 2400)
    assert (p.neg.n_prompts, p.neg.n_neurons, p.neg.linear_r, p.neg.linear_range) == (1000, 100, 0.95, 2.0)
    assert round(2 * p.neg.shift_range / p.neg.shift_step) + 1 == 101  # NEG §2.1: 101 shifts
    assert len(p.neg.mceval_tasks) == 22 and p.neg.multi_sizes[-1] == 2 ** 12 and p.neg.probe_sizes[-1] == 2 ** 13
    assert p.layers(32) == list(range(32))


def test_z_and_k_scale_with_the_neuron_count():
    # default z keeps the paper's share: 5,000 / 352,256 of SmolLM2's 46,080 neurons
    assert scales.DEFAULT.z(46_080) == 654
    assert scales.DEFAULT.k(46_080) == 100
    assert scales.SMOKE.layers(30) == [26, 27, 28, 29]
    assert scales.PAPER.k(50) == 50  # a count never exceeds the model's neurons


def test_smaller_scales_never_ask_for_more():
    def numbers(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from numbers(value, f"{f.name}.")
            elif isinstance(value, int) and not isinstance(value, bool):
                yield prefix + f.name, value
    for small, big in [(scales.SMOKE, scales.DEFAULT), (scales.DEFAULT, scales.PAPER)]:
        big_numbers = dict(numbers(big))
        for name, value in numbers(small):
            assert value <= big_numbers.get(name, value), f"{small.name}.{name} = {value} > {big.name}'s {big_numbers[name]}"


def test_every_field_says_where_it_comes_from():
    source = inspect.getsource(scales)
    for cls in (scales.NeuronLLM, scales.CNL, scales.NEG):
        for f in dataclasses.fields(cls):
            line = next(line for line in source.splitlines() if line.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{cls.__name__}.{f.name}: document the field and its paper source in one comment"


def test_task_names_are_loader_names():
    from neuronloc.tasks.loaders import EXAMPLE_LOADERS, LOADERS

    for scale in scales.SCALES.values():
        assert set(scale.neuronllm.tasks) <= set(LOADERS)
        assert set(scale.neg.mceval_tasks) <= set(LOADERS)
        assert set(scale.cnl.localize) <= set(EXAMPLE_LOADERS)


def test_erase_n_reads_the_per_data_set_override():
    from dataclasses import replace
    cnl = replace(scales.CNL(), n_erase=120, n_erase_by=(("code", 60),))
    assert (cnl.erase_n("code"), cnl.erase_n("gsm8k")) == (60, 120)
    assert scales.CNL().erase_n("code") is None  # None: every evaluation question
