"""Causal tracing (ROME, Meng et al. 2022 §2.1; a CNL baseline, CNL §3).

Three runs of the fact's prompt:
  clean      the model as is: P(answer) = p_clean.
  corrupted  Gaussian noise added to the subject tokens' embeddings (site `embed`, op
             `noise`, std = `noise` x the std of the embedding matrix, 3 in the CNL paper;
             seeded, the same noise in every run): p_corrupted.
  restored   corrupted, but one site at one (layer, token) set back to its clean value:
             p_restored[layer, token]. Indirect effect IE = p_restored - p_corrupted.

Sites restored ("kinds"): "resid.pre" (the hidden state entering layer l; ROME's
hidden state after layer l is resid.pre of l + 1), "mlp.out" and "attn.out" (what the
block adds to the residual stream). `window` restores a run of that many layers
centred on l (ROME uses 10 for mlp/attn; default 1 = the layer alone).

Cost per fact: 1 clean forward + per kind one batched forward per layer, of
1 + n_tokens rows (row 0 corrupted, row 1 + t restored at token t; `tokens` restricts the
restored tokens, e.g. to the subject's last one).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..hooks import Edit, capture, intervene
from ..models import LM
from .facts import Fact, last_probs, make_fact

KINDS = ("resid.pre", "mlp.out", "attn.out")


@dataclass
class Trace:
    """Causal-tracing result of one fact.

    restored[kind]: `[layer, token]` P(answer) corrupted with that site restored.
    clean, corrupted: P(answer) of the clean and the corrupted run.
    """

    fact: Fact
    restored: dict[str, torch.Tensor]
    clean: float
    corrupted: float
    params: dict = field(default_factory=dict)

    def effect(self, kind: str = "resid.pre") -> torch.Tensor:
        """Indirect effect `[layer, token]`: p_restored - p_corrupted."""
        return self.restored[kind] - self.corrupted

    def top_layers(self, k: int = 3, kind: str = "resid.pre", token: int | str = "max") -> list[int]:
        """The k layers of largest indirect effect, best first: at one token (an index, or
        "subject_last"), or the max over tokens ("max"). CNL §3 localizes the top 3."""
        grid = self.effect(kind)
        if token == "max":
            per_layer = grid.max(dim=1).values
        else:
            per_layer = grid[:, self.fact.subject_last if token == "subject_last" else int(token)]
        return torch.argsort(per_layer, descending=True, stable=True)[:k].tolist()


def corruption(lm: LM, fact: Fact, noise: float = 3.0, seed: int = 0) -> Edit:
    """The subject-embedding corruption: N(0, (noise x std of the embedding matrix)^2)."""
    std = float(lm.model.get_input_embeddings().weight.float().std())
    return Edit(0, None, "noise", noise * std, positions=list(fact.subject), seed=seed)


def causal_trace(lm: LM, fact, kinds=KINDS, noise: float = 3.0, seed: int = 0, window: int = 1,
                 layers=None, tokens=None, subject=None, answer=None) -> Trace:
    """Trace one fact (a Fact, or what `make_fact` takes with subject= and answer=).

    Returns restored probabilities `[layer, token]` per kind (NaN for layers and tokens not
    traced). tokens: the token positions restored (ints or "subject_last"; None = all): each
    batched forward has 1 + len(tokens) rows, so tracing one token costs 2 rows per layer.
    """
    fact = make_fact(lm, fact, subject, answer)
    ids, n_tok, target = fact.prompt, len(fact.prompt), fact.target
    embed = lm.site("embed")
    corrupt = corruption(lm, fact, noise, seed)
    p_clean = float(last_probs(lm, ids)[0, target])
    with intervene(lm.model, embed, [corrupt]):
        p_corrupted = float(last_probs(lm, ids)[0, target])
    toks = list(range(n_tok)) if tokens is None else \
        [fact.subject_last if t == "subject_last" else int(t) for t in tokens]
    restored = {}
    for kind in kinds:
        site = lm.site(kind)
        with torch.no_grad(), capture(lm.model, site, positions="all") as clean:
            last_probs(lm, ids)
        todo = range(site.n_layers) if layers is None else layers
        grid = torch.full((site.n_layers, n_tok), float("nan"))
        for layer in todo:
            run = range(max(0, layer - window // 2), min(site.n_layers, layer - window // 2 + window))
            # row 1 + r restores token toks[r] at every layer of the window; row 0 stays corrupted
            edits = [Edit(l, None, "patch", clean.acts[l][:1, t:t + 1], rows=[1 + r], positions=[t])
                     for l in run for r, t in enumerate(toks)]
            with intervene(lm.model, embed, [corrupt]), intervene(lm.model, site, edits):
                probs = last_probs(lm, ids, rows=1 + len(toks))[:, target]
            exact = torch.finfo(lm.dtype).bits >= 32  # half precision: batched and single runs round differently
            if exact and abs(float(probs[0]) - p_corrupted) > 1e-3 * p_corrupted + 1e-6:
                raise RuntimeError("the corrupted row of a batched trace differs from the corrupted run: "
                                   "the model's rows are not independent (padding or batch-dependent layers?)")
            grid[layer, toks] = probs[1:].cpu().to(grid.dtype)
        restored[kind] = grid
    params = dict(kinds=list(kinds), noise=noise, seed=seed, window=window, tokens=toks)
    return Trace(fact, restored, p_clean, p_corrupted, params)
