"""The answer engine and its read-outs against hand computations: option scores from
one unbatched forward per option, IG fast vs reference path for every read-out, IG by
finite differences and NeurGrad by a measured Δ sweep under a multi-token read-out,
the intervention read-out under edits."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

import neuronloc as nl
from neuronloc.attribution import attribute, integrated_gradients, neurgrad_options
from neuronloc.engine import PRIOR_PROMPT, Layout, Query, forward_rows, make_query, prefix_cache
from neuronloc.hooks import Edit
from neuronloc.interventions import evaluate_conditions, evaluate_options
from neuronloc.metrics import neg_slope
from neuronloc.models import SPLIT_ROWS, contiguous_input
from neuronloc.tasks import READOUTS, TaskError

from conftest import IG_TOLERANCE, float64_twin, rel_err, tiny_llama
from test_attribution import _target_value, hand_ig, hand_scores as _hand_scores, option_logprobs

# multi-token option texts (CharTokenizer: " f" is one token, each further character one more)
QUESTION = nl.MCQuestion(stem="What is 2+2? Think it over.", options=("four", "five", "six or so", "7"), answer=1,
                         instruction="Answer with the option.")


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=1)


@pytest.fixture(scope="module")
def lm64(lm):
    return float64_twin(lm)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("rows", ["full", "per_option", "tree"])
def test_option_scores_equal_hand_log_likelihoods(lm, readout, rows):
    """Batched rows (after the prefix cache: one per option, or one tree per condition;
    or whole prompts) give each option's summed log-probability computed from one plain
    forward per option (cloze_norm: / characters, pmi: - log P(option | "Answer:"))."""
    query = make_query(lm, replace(QUESTION, readout=readout))
    full = rows == "full"
    layout = Layout(query, 2, full=full, tree=rows == "tree")
    assert layout.tree == (rows == "tree" and readout != "letter")
    with torch.no_grad():
        scores = forward_rows(lm, layout, None if full else prefix_cache(lm, query.prefix))
    expected = _hand_scores(lm, query)
    assert scores.shape == (2, 4)
    assert torch.allclose(scores.double(), expected.expand(2, -1), rtol=1e-5, atol=1e-5)


def test_readouts_differ_as_defined(lm):
    """letter reads label tokens; cloze its texts; cloze_norm divides by len(" " + text);
    pmi subtracts the content-free prior, computed by hand here."""
    letter, cloze, norm, pmi = (make_query(lm, QUESTION, readout=r) for r in READOUTS)
    assert letter.single_token and not cloze.single_token
    assert norm.lengths.tolist() == [5.0, 5.0, 10.0, 2.0]
    prior_q = Query(torch.tensor(lm.tokenizer(PRIOR_PROMPT)["input_ids"]), cloze.continuations)
    assert torch.allclose(pmi.priors.double(), option_logprobs(lm, prior_q), atol=1e-5)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("target", ["option_prob", "answer_prob", "prob_margin"])
def test_ig_fast_and_reference_against_float64_for_every_readout(lm, lm64, readout, target):
    query = make_query(lm, replace(QUESTION, readout=readout))
    fast = integrated_gradients(lm, query, target, steps=4, path="fast", batch_size=5)
    ref = integrated_gradients(lm, query, target, steps=4, path="reference")
    truth = integrated_gradients(lm64, make_query(lm64, replace(QUESTION, readout=readout)), target, steps=4,
                                 path="reference")
    assert rel_err(fast, truth) <= IG_TOLERANCE[target]
    assert rel_err(ref, truth) <= IG_TOLERANCE[target]


def test_ig_cloze_equals_hand_riemann_sum_of_finite_differences(lm):
    """IG under the cloze read-out (multi-token options) against central differences of
    option_prob computed from one plain forward per option."""
    query = make_query(lm, replace(QUESTION, readout="cloze"))
    steps, layer = 3, 1
    scores = integrated_gradients(lm, query, "option_prob", steps=steps, layers=[layer])
    for i in (2, 19):
        assert scores[layer, i].item() == pytest.approx(hand_ig(lm, query, layer, i, steps), rel=2e-2, abs=1e-7)


def test_neurgrad_cloze_matches_measured_slope(lm):
    """NEG under the cloze read-out: NeurGrad = slope of P(answer text) under a + Δ·sign(a)."""
    q = replace(QUESTION, readout="cloze")
    query = make_query(lm, q)
    scores = attribute("neurgrad", lm, q).scores
    deltas = torch.linspace(-0.01, 0.01, 5, dtype=torch.float64)
    base = _target_value(lm, query, "answer_prob")
    for layer, i in [(0, 5), (2, 30)]:
        shifts = torch.tensor([_target_value(lm, query, "answer_prob", [Edit(layer, [i], "add_sign", float(d))]) - base
                               for d in deltas], dtype=torch.float64)
        assert scores[layer, i].item() == pytest.approx(float(neg_slope(deltas, shifts)), rel=2e-2, abs=1e-9)


def test_neurgrad_options_cloze_rows_are_per_option_neurgrad(lm):
    q = replace(QUESTION, readout="cloze")
    per_option = neurgrad_options(lm, q)
    for k in range(4):
        single = attribute("neurgrad", lm, replace(q, answer=k)).scores
        assert torch.allclose(per_option[k], single, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("readout", ["cloze", "pmi"])
def test_evaluate_conditions_under_edits_equals_hand_softmax(lm, readout):
    """Each condition's option probabilities = softmax of the hand scores under its edits."""
    q = replace(QUESTION, readout=readout)
    query = make_query(lm, q)
    conditions = [[], [Edit(1, [0, 3, 9], "set", 0.0)], [Edit(2, [1, 4], "scale", 2.0), Edit(0, [7], "add", 0.5)]]
    results = evaluate_conditions(lm, [q, replace(q, answer=2)], conditions)
    for cond, res in zip(conditions, results):
        expected = _hand_scores(lm, query, cond).softmax(-1).float()
        assert torch.allclose(res.probs[0], expected, atol=1e-5)
        assert torch.allclose(res.probs[1], expected, atol=1e-5)
    full = evaluate_options(lm, [q], conditions[1], positions=[query.position])
    assert torch.allclose(full.probs[0], results[1].probs[0], atol=1e-5)


def test_readout_argument_overrides_the_question(lm):
    assert make_query(lm, QUESTION, readout="pmi").readout == "pmi"
    with pytest.raises(TaskError, match="unknown read-out 'logit'"):
        make_query(lm, QUESTION, readout="logit")
    with pytest.raises(TaskError, match="unknown read-out"):
        replace(QUESTION, readout="nope")


def test_task_with_readout_and_render(lm):
    """Non-letter read-outs do not list the options and answer demonstrations with text."""
    demo = replace(QUESTION, answer=0)
    task = nl.Task("t", [replace(QUESTION, demonstration=demo)], [demo]).with_readout("cloze_norm")
    assert {q.readout for q in task.questions + task.demonstrations} == {"cloze_norm"}
    text = nl.render(task.questions[0])
    assert "A. four" not in text and "Answer: four" in text and text.endswith("Answer:")
    assert text == nl.render(task.questions[0].with_options([3, 2, 1, 0]))  # order-free
    letter = nl.render(replace(QUESTION, demonstration=demo))
    assert "A. four" in letter and "Answer: A" in letter


def test_prompt_longer_than_the_context_is_a_clear_error():
    small = tiny_llama(seed=0, max_position_embeddings=16)
    with pytest.raises(TaskError, match="longer than the model's context of 16 tokens"):
        make_query(small, QUESTION)


@pytest.mark.parametrize("layers, match", [([99], r"layers \[99\] out of range.*3 layers"), ([], "layers is empty")])
def test_bad_layers_are_clear_errors(lm, layers, match):
    with pytest.raises(ValueError, match=match):
        attribute("ig", lm, QUESTION, layers=layers, steps=2)


def test_empty_prompt_is_a_clear_error():
    with pytest.raises(TaskError, match="empty prompt"):
        Query(torch.tensor([], dtype=torch.long), (torch.tensor([3]),))


def test_competence_is_a_binomial_test_against_chance(lm):
    """acc, chance and p-value as scipy computes them from the hand-read answers."""
    from scipy.stats import binomtest
    from neuronloc.interventions import choose_readout, competence
    questions = [replace(QUESTION, answer=k, uid=f"q{k}", readout="cloze") for k in range(4)]
    got = competence(lm, questions, "cloze")
    right = sum(int(_hand_scores(lm, make_query(lm, q)).argmax()) == q.answer for q in questions)
    assert (got.n, got.correct, got.chance) == (4, right, 0.25)
    assert got.p_value == pytest.approx(binomtest(right, 4, 0.25, alternative="greater").pvalue)
    assert got.ci[0] <= got.acc <= got.ci[1] and got.ci[1] < 1  # two-sided interval
    readout, every = choose_readout(lm, questions)
    assert set(every) == set(READOUTS)
    assert right == 1  # the prompts differ only in the answer index: one prediction for all four
    assert readout is None  # 1 of 4 right is chance under every read-out
    with pytest.raises(ValueError, match="one question per example"):
        competence(lm, nl.qatt(nl.Task("t", questions[:1])).questions, "cloze")


def test_rows_layout_is_a_tree_only_where_rows_share_the_prefix(lm):
    """One row per condition for multi-token options after a shared prefix; one row per
    option where there is no cache or the family keeps plain attention (Gemma 2)."""
    from neuronloc.engine import rows_layout

    cloze, letter = make_query(lm, QUESTION, readout="cloze"), make_query(lm, QUESTION, readout="letter")
    cache = prefix_cache(lm, cloze.prefix)
    tree = rows_layout(lm, cloze, 3, cache)
    assert tree.tree and tree.per_condition == 1 and tree.input_ids().shape == (3, tree.width)
    # the answer position, then each option's tokens but its last (" four" -> 4 of 5 tokens, ...)
    assert tree.width == 1 + sum(len(c) - 1 for c in cloze.continuations)
    assert not rows_layout(lm, cloze, 3, None).tree
    assert not rows_layout(lm, letter, 3, prefix_cache(lm, letter.prefix)).tree
    from test_sites import build
    from conftest import CharTokenizer
    from neuronloc.models import from_module
    gemma = from_module(build("gemma2"), CharTokenizer(), name="gemma2")
    gq = Query(torch.arange(2, 8), (torch.tensor([9, 10]), torch.tensor([11, 12, 13])))
    assert not rows_layout(gemma, gq, 3, prefix_cache(gemma, gq.prefix)).tree


def test_swapped_modules_are_restored_when_the_body_raises(lm):
    """head_rows swaps the LM head and shared_prefix the attention implementation: both
    come back on an exception inside the block."""
    from neuronloc.engine import cached_rows, head_rows
    head, attn = lm.model.get_output_embeddings(), lm.model.config._attn_implementation
    query = make_query(lm, QUESTION)
    cache = prefix_cache(lm, query.prefix)
    with pytest.raises(RuntimeError, match="inside"):
        with head_rows(lm, torch.tensor([3, 4])) as swapped, cached_rows(lm, cache, 2, Layout(query, 1, tree=True)):
            assert swapped and lm.model.get_output_embeddings() is not head
            assert lm.model.config._attn_implementation != attn  # the shared-prefix attention is in place
            raise RuntimeError("inside")
    assert lm.model.get_output_embeddings() is head and lm.model.config._attn_implementation == attn


def test_the_kv_cache_goes_by_the_forwards_own_name(lm):
    """transformers 5.24 renamed the forward's `past_key_values` to `cache` (a FutureWarning per
    call site under the old name, which the notebooks would print and nbval compare): the
    engine hands the cache over by the name the model's forward takes, and reads it back."""
    import warnings
    import transformers
    from packaging.version import Version
    from neuronloc.engine import with_cache
    renamed = Version(transformers.__version__) >= Version("5.24.0")
    assert list(with_cache(lm.model, None)) == ["cache" if renamed else "past_key_values"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cache = prefix_cache(lm, make_query(lm, QUESTION, readout="cloze").prompt)
        assert cache is not None and cache.get_seq_length() > 0
        attribute("ig", lm, QUESTION, target="option_prob", steps=2, readout="cloze")  # the fast path: prefix + rows


def test_the_head_reads_a_sliced_batch_as_one_matrix_product():
    """`models.contiguous_input`: the LM head copies the strided slice transformers gives it
    (`logits_to_keep`) so that torch runs one matrix product, not one product per row against
    the expanded weight (`aten::bmm`); the logits are the same up to rounding."""
    from torch.profiler import ProfilerActivity, profile

    from conftest import tiny_llama

    lm = tiny_llama(seed=3)
    ids = torch.randint(2, 100, (20, 5), generator=torch.Generator().manual_seed(0))  # 40 rows kept: more than
    head = lm.model.get_output_embeddings()  # `models.split_rows` splits, so the head's own product runs
    assert head._neuronloc_contiguous and 20 * 2 > SPLIT_ROWS
    with torch.no_grad():
        full = lm.model(input_ids=ids).logits[:, -2:]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            kept = lm.model(input_ids=ids, logits_to_keep=2).logits
    assert torch.allclose(kept, full, rtol=1e-5, atol=1e-6)
    vocab = head.out_features

    def per_row_head(prof) -> bool:  # a bmm against the [rows, d, vocab] expanded head weight
        return any(e.key == "aten::bmm" and any(s and s[-1] == vocab for s in e.input_shapes)
                   for e in prof.key_averages(group_by_input_shape=True))
    assert not per_row_head(prof)
    # without the copy, the same call runs per-row products
    handle = next(iter(head._forward_pre_hooks))
    hook = head._forward_pre_hooks.pop(handle)
    try:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            lm.model(input_ids=ids, logits_to_keep=2)
        assert per_row_head(prof)
    finally:
        head._forward_pre_hooks[handle] = hook
    assert lm.model.get_output_embeddings() is contiguous_input(head)  # registered once
    assert len(head._forward_pre_hooks) == 1


@pytest.mark.parametrize("n_out", [8, 12, 6])
@pytest.mark.parametrize("rows", [1, 4, SPLIT_ROWS, SPLIT_ROWS + 1])
def test_a_linear_of_few_rows_split_in_blocks_equals_the_plain_product(n_out, rows):
    """`models.split_rows`: a product of at most SPLIT_ROWS rows runs as a `bmm` over SPLIT_BLOCKS
    blocks of the weight's rows (none where the blocks do not divide the outputs), with the
    plain linear's output and input gradient (float64), the same numbers at 1 and 2 threads;
    more rows run the plain product."""
    from torch.profiler import ProfilerActivity, profile

    from neuronloc.models import SPLIT_BLOCKS, split_rows

    g = torch.Generator().manual_seed(rows)
    plain = torch.nn.Linear(5, n_out, dtype=torch.float64)
    split = split_rows(torch.nn.Sequential(copy.deepcopy(plain)))[0]
    x = torch.randn(rows, 1, 5, dtype=torch.float64, generator=g, requires_grad=True)
    cotangent = torch.randn(rows, 1, n_out, dtype=torch.float64, generator=g)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                y = split(x)
            runs.append((y, *torch.autograd.grad(y, x, cotangent)))
    finally:
        torch.set_num_threads(before)
    expected = plain(x)
    (ex,) = torch.autograd.grad(expected, x, cotangent)
    for y, gx in runs:
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gx, ex, rtol=1e-12, atol=1e-14)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    splits = n_out % SPLIT_BLOCKS == 0 and rows <= SPLIT_ROWS
    assert any(e.key == "aten::bmm" for e in prof.key_averages()) == splits


def test_split_rows_leaves_subclasses_and_wrapped_forwards_alone():
    """Only plain nn.Linear modules get the split forward: a subclass (a quantised layer) and a
    module whose forward is already an instance attribute (accelerate's device hooks) keep theirs;
    `from_module` installs it on every plain linear, the head included."""
    from conftest import tiny_llama

    from neuronloc.models import split_rows

    class Sub(torch.nn.Linear):
        pass

    wrapped = torch.nn.Linear(3, 4)
    own = wrapped.forward
    wrapped.forward = own
    sub, plain = Sub(3, 4), torch.nn.Linear(3, 4)
    split_rows(torch.nn.ModuleList([sub, wrapped, plain]))
    assert "forward" not in vars(sub) and wrapped.forward is own and "forward" in vars(plain)
    lm = tiny_llama(seed=3)
    linears = [m for m in lm.model.modules() if type(m) is torch.nn.Linear]
    assert linears and all("forward" in vars(m) for m in linears)
    assert lm.model.get_output_embeddings() in linears


def test_a_model_with_split_rows_pickles_and_copies():
    """torch.save / torch.load of the whole model and copy.deepcopy keep the split forward, bound
    to the new module (a bound method would not unpickle)."""
    import io

    from neuronloc.models import split_rows

    model = split_rows(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for other in (torch.load(buffer, weights_only=False), copy.deepcopy(model)):
        assert all(m.forward.args[0] is m for m in other)
        assert torch.equal(other(x), model(x))


@pytest.mark.parametrize("family", [f for f in __import__("neuronloc.sites", fromlist=["FAMILIES"]).FAMILIES if f != "bert"])
def test_the_prefix_cache_stops_before_the_last_ffn_and_holds_every_layers_keys_and_values(family):
    """prefix_cache ends the forward at the last layer's FFN, which does not run; every layer's
    keys and values are bitwise those of a forward run to its end, and the answer position run
    from the cache gives the whole prompt's logits. A layer hooked by accelerate runs to its end."""
    from conftest import CharTokenizer
    from test_sites import SPECS, build
    from neuronloc.engine import decoder_of, returned_cache, with_cache
    from neuronloc.models import from_module

    lm = from_module(build(family), CharTokenizer(), name=family)
    ids = torch.randint(2, 64, (9,), generator=torch.Generator().manual_seed(0))
    layers = lm.model.get_submodule(SPECS[family][1])
    ran = []
    handles = [layer.get_submodule(SPECS[family][2]).register_forward_hook(lambda m, a, o, l=l: ran.append(l))
               for l, layer in enumerate(layers)]  # runs when the FFN has run
    try:
        with torch.no_grad():
            cache = prefix_cache(lm, ids[:8])
            assert ran == list(range(len(layers) - 1))
            whole = returned_cache(decoder_of(lm.model)(input_ids=ids[None, :8], use_cache=True))
            assert len(cache.layers) == len(whole.layers) == len(layers)
            for ours, theirs in zip(cache.layers, whole.layers):
                assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
            last = lm.model(input_ids=ids[None, 8:], use_cache=True, **with_cache(lm.model, cache)).logits[0, -1]
            assert torch.allclose(last, lm.model(input_ids=ids[None]).logits[0, -1], rtol=1e-5, atol=1e-6)
            ran.clear()
            layers[-1].get_submodule(SPECS[family][2])._hf_hook = None  # as accelerate marks a hooked module
            try:
                prefix_cache(lm, ids[:8])
            finally:
                del layers[-1].get_submodule(SPECS[family][2])._hf_hook
            assert ran == list(range(len(layers)))
    finally:
        for h in handles:
            h.remove()
