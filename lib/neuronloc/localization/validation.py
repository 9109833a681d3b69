"""The CNL paper's tests of per-fact localization (CNL §3): the knowledge neurons of one
fact, and the validations of KN and ROME that CNL §3.2 re-runs.

localize: the three localizers of CNL §3.1 for one prompt (KN neurons, the causal trace's
  top layers, the knowledge circuit), cached.
trace_of: the causal trace of one prompt (noise draws, restoration window), cached; the
  window-1 sensitivity row of notebook 01 reads it.
kn_neurons (KN, Dai et al. 2022; CNL §3.1 'distributed parameters'): integrated gradients
  of P(answer's first token) for every FFN neuron at the last prompt position (grid
  alpha = linspace(0, 1, steps), KN's m = 20); a neuron is located when its score is
  > threshold x the prompt's largest score (KN's t = 0.2). One prompt, one set: CNL
  compares the sets of paraphrases, so KN's second step (keep neurons shared by p % of a
  fact's prompts) is not applied.
answer_prob: P(answer's first token) at the last position with neuron edits there (KN's
  validation doubles or zeroes the located activations; CNL §3.2 compares with as many
  random neurons).
layer_sweep (ROME's validation, CNL §3.2 Fig. 2): the ROME edit of one fact at each layer
  in turn; per layer, log P(new object) and log P(true object) (whole answers, teacher
  forced) on the edited prompt and on paraphrases; efficacy = new beats true.

Cost: kn_neurons = one IG (30 layers x `steps` rows at one position, fast path);
answer_prob = one forward; layer_sweep = the layers' `rome_edits` (optimised together) + per layer one forward of the prompts
and object.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from ..attribution import attribute
from ..attribution.aggregate import kn_select
from ..engine import Query, logits_from
from ..hooks import Edit, intervene
from ..models import LM
from ..store import Store, key
from .causal_tracing import Trace, causal_trace
from .circuits import Circuit, knowledge_circuit
from .facts import Fact, last_probs, make_fact, padded_logprobs
from .rome import applied, rome_edits


class Localized(NamedTuple):
    """The three CNL §3.1 localizations of one prompt: KN neurons (flat ids), the causal
    trace's top layers, the knowledge circuit (its nodes: `circuit.nodes`)."""

    kn: torch.Tensor
    layers: list[int]
    circuit: Circuit
    trace: Trace


def localize(lm: LM, fact: Fact, store: Store | None = None, steps: int = 20, threshold: float = 0.2,
             top_layers: int = 3, kind: str = "mlp.out", token: str = "subject_last", noise: float = 3.0,
             circuit_threshold: float = 0.01, ablation: str = "zero", seed: int = 0, window: int = 1,
             draws: int = 1) -> Localized:
    """KN (`kn_scores`, `kn_neurons`), causal tracing (`trace_of`: `causal_trace` of `kind`
    with `draws` noise draws and restoration `window`; the top_layers layers of largest
    indirect effect at `token`) and the knowledge circuit (`knowledge_circuit` with
    `circuit_threshold`, `ablation`) of one prompt; each cached in `store`."""
    kn = kn_neurons(kn_scores(lm, fact, steps, store=store), threshold)
    trace = trace_of(lm, fact, store, kind, token, noise, seed, window, draws)
    circuit = _cached(store, lm, fact, "knowledge_circuit", lambda: knowledge_circuit(lm, fact, ablation, circuit_threshold),
                      ablation=ablation, threshold=circuit_threshold)
    return Localized(kn, trace.top_layers(top_layers, kind, token), circuit, trace)


def _cached(store: Store | None, lm: LM, fact: Fact, name: str, fn, **params):
    """fn() cached in `store` under the fact's prompt, subject positions and answer and `params`."""
    if store is None:
        return fn()
    return store.cached(key(model=lm, kind=name, prompt=fact.prompt, subject=[fact.subject.start, fact.subject.stop],
                            answer=fact.answer, **params), fn)


def trace_of(lm: LM, fact: Fact, store: Store | None = None, kind: str = "mlp.out", token: str = "subject_last",
             noise: float = 3.0, seed: int = 0, window: int = 1, draws: int = 1) -> Trace:
    """The causal trace (`causal_trace` of `kind`) of one prompt, restored only at `token`
    (every token with "max"), cached in `store`; `Trace.top_layers(k, kind, token)` ranks it."""
    tokens = None if token == "max" else [token]  # restore only where the layers are ranked
    extra = {} if (window, draws) == (1, 1) else dict(window=window, draws=draws)  # one draw, window 1: the old entries
    return _cached(store, lm, fact, "causal_trace",
                   lambda: causal_trace(lm, fact, kinds=(kind,), noise=noise, seed=seed, tokens=tokens, window=window, draws=draws),
                   kinds=[kind], noise=noise, seed=seed, tokens=tokens, **extra)


def kn_scores(lm: LM, fact: Fact, steps: int = 20, site: str = "ffn.mid", store: Store | None = None) -> torch.Tensor:
    """KN's IG scores `[layer, neuron]` of P(the fact's first answer token) at the last prompt
    position (linspace grid of `steps` points); cached in `store`."""
    query = Query(fact.prompt, (fact.answer[:1],), 0, "cloze")

    def run():
        return attribute("ig", lm, query, target="answer_prob", steps=steps, rule="linspace", site=site).scores
    if store is None:
        return run()
    return store.cached(key(model=lm, kind="kn_scores", prompt=fact.prompt, target=fact.target, steps=steps, site=site), run)


def kn_neurons(scores: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Located neurons of one prompt (flat ids, best first): score > threshold x the max score
    (none if the max is <= 0). scores: `[layer, neuron]` of `kn_scores`."""
    return kn_select(scores[None], threshold, share=1.0).ids


@torch.no_grad()
def answer_prob(lm: LM, fact: Fact, edits: Sequence[Edit] = (), site: str = "ffn.mid") -> float:
    """P(the fact's first answer token) at the last prompt position, with `edits` of `site`
    applied at that position (e.g. `hooks.excite` / `hooks.silence` of located neurons)."""
    with intervene(lm.model, lm.site(site), list(edits), positions="last"):
        return float(last_probs(lm, fact.prompt)[0, fact.target])


@torch.no_grad()
def answer_logprob(lm: LM, prompt: torch.Tensor, answer: torch.Tensor) -> float:
    """log P(answer tokens | prompt), teacher forced, summed over the answer's tokens.
    prompt `[n]`, answer `[k]` token ids."""
    ids = torch.cat([prompt, answer[:-1]])[None].to(lm.device)
    logits = lm.model(input_ids=ids, **logits_from(lm.model, len(answer))).logits[0, -len(answer):]
    lp = logits.double().log_softmax(-1)
    return float(lp[torch.arange(len(answer)), answer.to(lp.device)].sum())


@torch.no_grad()
def answer_logprobs(lm: LM, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """`answer_logprob` of every (prompt, answer) pair, all in one forward (`padded_logprobs`)."""
    first = min(len(prompt) - 1 for prompt, _ in pairs)
    lp = padded_logprobs(lm, [torch.cat([prompt, answer[:-1]]) for prompt, answer in pairs], first)
    return [float(lp[i, torch.arange(len(answer)) + len(prompt) - 1 - first, answer.to(lp.device)].sum())
            for i, (prompt, answer) in enumerate(pairs)]


def layer_sweep(lm: LM, prompt: str, subject: str, new: str, true: str, layers: Sequence[int],
                paraphrases: Sequence[str] = (), covs: dict | None = None, progress: bool = False,
                **edit_params) -> list[dict]:
    """ROME-edit `prompt` (subject `subject`, answer `true`) to answer `new` at each of `layers`
    in turn; rows {layer (None = unedited), prompt ("edited" or "paraphrase k"), logp_new,
    logp_true, success (logp_new > logp_true)}. covs: {layer: key second moment} (else
    `rome_edits` computes it from its corpus); edit_params go to `rome_edits`, which optimises
    the layers' edits together."""
    prompts = [("edited", prompt)] + [(f"paraphrase {k}", p) for k, p in enumerate(paraphrases)]
    facts = [(name, make_fact(lm, p, subject, new), make_fact(lm, p, subject, true)) for name, p in prompts]

    def read(layer):
        lps = answer_logprobs(lm, [(f.prompt, f.answer) for _, f_new, f_true in facts for f in (f_new, f_true)])
        return [{"layer": layer, "prompt": name, "logp_new": lp_new, "logp_true": lp_true, "success": lp_new > lp_true}
                for (name, _, _), lp_new, lp_true in zip(facts, lps[0::2], lps[1::2])]

    rows = read(None)
    edits = rome_edits(lm, prompt, list(layers), subject=subject, new=new, covs=covs, **edit_params) if layers else []
    for edit in tqdm(edits, desc="ROME layers", disable=not progress, leave=False):
        with applied(lm, edit):
            rows += read(edit.layer)
    return rows


@torch.no_grad()
def answer_top1(lm: LM, prompt: torch.Tensor, answer: torch.Tensor) -> bool:
    """Whether greedy decoding after `prompt` starts with `answer`: every answer token is the
    top-1 token under teacher forcing. prompt `[n]`, answer `[k]` token ids."""
    ids = torch.cat([prompt, answer[:-1]])[None].to(lm.device)
    logits = lm.model(input_ids=ids, **logits_from(lm.model, len(answer))).logits[0, -len(answer):]
    return bool((logits.argmax(-1).cpu() == answer).all())
