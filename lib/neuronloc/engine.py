"""The answer engine: how a question is read out of the model, shared by attribution
and the intervention read-out.

A `Query` is a question tokenized once: the prompt (its last token is the *answer
position*, where neurons are read and edited) and one token continuation per option
(or the one answer of a free-form example). A read-out turns the model's logits into
one log-score per option:

  letter      log P(label) of the option's letter (" A" ...) listed in the prompt
  cloze       log P(option text | prompt), summed over its tokens (teacher forced)
  cloze_norm  cloze / the continuation's length in characters (lm-eval-harness acc_norm)
  pmi         cloze - log P(option text | "Answer:") (domain-conditional PMI,
              Holtzman et al. 2021; the prior is the unedited model's)

Option probabilities are the softmax over the option scores; the targets of
`neuronloc.targets` read them.

Rows. Editing only the answer position leaves every earlier position unchanged, so
the prompt minus its last token runs once into a KV cache (`prefix_cache`) and
only the answer position and the continuations are re-run, many *conditions* (an IG
step of a layer, an intervention, a target) in one batch. A condition takes one row
when every continuation is one token (all options are read at the answer position),
otherwise one row per option, or, where rows share the cached prefix, one *tree* row
holding the answer position and every option's tokens, each option masked to see only
itself (`rows_layout`); rows are condition-major (`Layout`). Rows attend to the
one cached prefix by broadcasting where the family allows it (`prefix_attention`),
else the prefix is expanded per row; the LM head computes only the option logits
when the target depends on their differences alone (`head_rows`).
"""
from __future__ import annotations

import functools
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .hooks import neuron_hooks
from .models import LM, contiguous_input, split_rows
from .sites import resolve_site, text_config
from .targets import SHIFT_INVARIANT
from .tasks.core import READOUTS, MCQuestion, TaskError, continuation_ids, label_token_ids, render

PRIOR_PROMPT = "Answer:"  # the content-free prompt of the pmi read-out


@dataclass(frozen=True)
class Query:
    """A question as token ids.

    prompt `[n]`: the prompt; its last token is the answer position.
    continuations: one token tensor per option (multiple choice) or the answer (free
      form); each is predicted from the answer position on, teacher forced.
    answer: index of the correct continuation.
    readout: "letter" | "cloze" | "cloze_norm" | "pmi" (how option scores are made).
    lengths `[n_options]`: continuation lengths in characters (cloze_norm), else None.
    priors `[n_options]`: log P(continuation | "Answer:") (pmi), else None.
    """

    prompt: torch.Tensor
    continuations: tuple[torch.Tensor, ...]
    answer: int = 0
    readout: str = "cloze"
    lengths: torch.Tensor | None = None
    priors: torch.Tensor | None = None
    uid: str = ""

    def __post_init__(self):
        if self.prompt.numel() == 0:
            raise TaskError("empty prompt: a question needs at least one token before its answer")
        if not self.continuations or any(c.numel() == 0 for c in self.continuations):
            raise TaskError("every option (or answer) needs at least one token")
        if not 0 <= self.answer < len(self.continuations):
            raise TaskError(f"answer index {self.answer} out of range for {len(self.continuations)} continuations")

    @property
    def position(self) -> int:
        """The answer position (index of the prompt's last token)."""
        return len(self.prompt) - 1

    @property
    def prefix(self) -> torch.Tensor:
        """What the KV cache holds: the prompt without its last token."""
        return self.prompt[:-1]

    @property
    def n_options(self) -> int:
        return len(self.continuations)

    @property
    def single_token(self) -> bool:
        """Every continuation is one token: all are read at the answer position of one row."""
        return all(len(c) == 1 for c in self.continuations)

    @property
    def first_tokens(self) -> torch.Tensor:
        """`[n_options]` the first token of each continuation (all of it when single_token)."""
        return torch.stack([c[0] for c in self.continuations])

    @property
    def answer_tokens(self) -> torch.Tensor:
        return self.continuations[self.answer]


def make_query(lm: LM, question, chat: bool = False, readout: str | None = None) -> Query:
    """Tokenize a question once.

    question: an MCQuestion (read out by `readout`, default its own `question.readout`),
    an object with `prompt` and `answer` strings (free form: the answer's tokens, teacher
    forced, scored by their summed log-probability), or a Query (returned as is).
    """
    if not lm.model.can_generate():
        raise ValueError(f"{lm.model.config.model_type!r} is not a causal LM: attribution reads the next-token "
                         "logits at the answer position; masked-LM read-out is not supported (sites and hooks are)")
    if isinstance(question, Query):
        return question
    tok = lm.tokenizer
    if isinstance(question, MCQuestion):
        readout = readout or question.readout
        if readout not in READOUTS:
            raise TaskError(f"unknown read-out {readout!r}; use one of {', '.join(READOUTS)}")
        prompt = render(question, tok, chat=chat, readout=readout)
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        if readout == "letter":
            conts = [[t] for t in label_token_ids(tok, prompt, question.labels)]
        else:
            conts = [continuation_ids(tok, prompt, text) for text in question.options]
        query = Query(torch.tensor(ids), tuple(torch.tensor(c) for c in conts), question.answer, readout,
                      uid=question.uid)
        if readout == "cloze_norm":
            query = _replace(query, lengths=torch.tensor([float(len(" " + o)) for o in question.options]))
        elif readout == "pmi":
            query = _replace(query, priors=prior_scores(lm, question.options))
    else:
        prompt, answer = question.prompt, question.answer
        if not prompt or not answer or not answer.strip():
            raise TaskError(f"a free-form example needs a non-empty prompt and answer, got {prompt[:40]!r} -> {answer!r}")
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        query = Query(torch.tensor(ids), (torch.tensor(continuation_ids(tok, prompt, answer)),), 0, "cloze",
                      uid=getattr(question, "uid", ""))
    check_context(lm, query)
    return query


def _replace(query: Query, **changes) -> Query:
    from dataclasses import replace
    return replace(query, **changes)


def check_context(lm: LM, query: Query) -> None:
    """A prompt plus its longest continuation must fit the model's context."""
    cfg = text_config(lm.model)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    need = len(query.prompt) + max(len(c) for c in query.continuations) - 1
    if limit and need > limit:
        raise TaskError(f"prompt of {len(query.prompt)} tokens (+ answer) is longer than the model's context of "
                        f"{limit} tokens: shorten it (fewer demonstrations, a shorter instruction)")


@torch.no_grad()
def prior_scores(lm: LM, options) -> torch.Tensor:
    """log P(option text | "Answer:") for each option, unedited model: `[n_options]` (pmi)."""
    ids = lm.tokenizer(PRIOR_PROMPT, add_special_tokens=True)["input_ids"]
    query = Query(torch.tensor(ids), tuple(torch.tensor(continuation_ids(lm.tokenizer, PRIOR_PROMPT, o)) for o in options))
    layout = Layout(query, 1, full=True)
    logits = lm.model(input_ids=layout.input_ids(1).to(lm.device)).logits
    return layout.log_scores(logits)[0].cpu()


# ----------------------------------------------------------------------- rows and scores

class Layout:
    """Where conditions, options and read tokens sit in a batch of rows.

    full=False: rows hold the answer position and the continuations (after a prefix
    cache); full=True: rows hold the whole prompt (the reference path). `at` is the
    answer position's index inside a row. Rows are condition-major: condition c owns
    rows c * per_condition ... (c + 1) * per_condition - 1.

    tree=True (multi-token options after a shared prefix cache, `rows_layout`): one row
    per condition holds the answer position followed by every option's tokens but its
    last; `mask` `[width, width]` lets an option's tokens see the answer position and
    their own earlier tokens only, and `offsets` gives each its position after the
    answer position, so each option is read as if it had its own row (the answer
    position and the layers below it are run once instead of once per option).
    """

    def __init__(self, query: Query, n_conditions: int, full: bool = False, tree: bool = False):
        self.query, self.n_conditions, self.full = query, n_conditions, full
        self.tree = tree and not full and not query.single_token
        self.per_condition = 1 if query.single_token or self.tree else query.n_options
        self.at = query.position if full else 0
        lead = query.prompt if full else query.prompt[-1:]
        self.mask = self.offsets = None
        if query.single_token:
            self.rows = [lead]
        elif self.tree:
            self.rows = [torch.cat([lead] + [c[:-1] for c in query.continuations])]
            n = len(self.rows[0])
            self.mask = torch.zeros(n, n, dtype=torch.bool)
            self.mask[:, 0] = True
            self.offsets = torch.zeros(n, dtype=torch.long)
            self.starts = []  # row index of each option's first own token
            start = 1
            for c in query.continuations:
                k = len(c) - 1
                self.starts.append(start)
                self.mask[start:start + k, start:start + k] = torch.ones(k, k, dtype=torch.bool).tril()
                self.offsets[start:start + k] = torch.arange(1, k + 1)
                start += k
        else:
            self.rows = [torch.cat([lead, c[:-1]]) for c in query.continuations]
        self.width = max(len(r) for r in self.rows)

    def condition_rows(self, c: int) -> list[int]:
        return list(range(c * self.per_condition, (c + 1) * self.per_condition))

    def input_ids(self, n_conditions: int | None = None) -> torch.Tensor:
        """`[n_conditions * per_condition, width]`, right padded (causal: padding is never read)."""
        one = torch.stack([torch.cat([r, r[-1:].expand(self.width - len(r))]) for r in self.rows])
        return one.repeat(self.n_conditions if n_conditions is None else n_conditions, 1)

    @property
    def n_read(self) -> int:
        """Positions from `at` on whose logits are read."""
        return max(len(c) for c in self.query.continuations)

    def log_scores(self, logits: torch.Tensor, option_logits: bool = False) -> torch.Tensor:
        """Option scores `[conditions, n_options]` from the rows' logits.

        logits: `[rows, >= n_read positions ending at the last, vocab]` — the head may
        have run only on the last positions — or, with option_logits (single-token
        query, `head_rows`), `[rows, ..., n_options]` holding only the options' logits,
        which are returned raw (a per-row constant away from log-probabilities).
        """
        q = self.query
        start = self.at - (self.width - logits.shape[1])  # the head ran on the last logits.shape[1] positions
        if q.single_token:
            x = logits[:, start].float()  # [conditions, vocab or n_options]
            if option_logits:
                scores = x
            else:
                scores = x.log_softmax(-1)[:, q.first_tokens.to(x.device)]
        elif self.tree:  # option o: its first token read at the answer position, the rest at its own tokens
            lp = logits[:, start:].float().log_softmax(-1)
            cols = []
            for o, c in enumerate(q.continuations):
                c = c.to(lp.device)
                at = torch.tensor([0, *range(self.starts[o], self.starts[o] + len(c) - 1)], device=lp.device)
                cols.append(lp[:, at, c].sum(-1))
            scores = torch.stack(cols, dim=1)
        else:
            n, per = logits.shape[0] // self.per_condition, self.per_condition
            lp = logits[:, start: start + self.n_read].float().log_softmax(-1).reshape(n, per, self.n_read, -1)
            cols = []
            for o, c in enumerate(q.continuations):
                c = c.to(lp.device)
                cols.append(lp[:, o, torch.arange(len(c), device=lp.device), c].sum(-1))
            scores = torch.stack(cols, dim=1)
        if q.lengths is not None:
            scores = scores / q.lengths.to(scores.device)
        if q.priors is not None:
            scores = scores - q.priors.to(scores.device)
        return scores  # [conditions, n_options]


def option_logits_suffice(query: Query, target) -> bool:
    """May the LM head compute only the options' logits? Yes when every option is one
    token, scores are not divided by lengths, and the target depends on score
    differences alone (a per-row constant, the log-normaliser, then cancels)."""
    return target in SHIFT_INVARIANT and query.single_token and query.lengths is None


def forward_rows(lm: LM, layout: Layout, cache, option_logits: bool = False, n_input: int | None = None,
                 sizes=None):
    """Run the rows of `layout` (after `cache` unless layout.full); return option scores
    `[conditions, n_options]`.

    Call inside the caller's hooks (edits, probes). n_input: conditions fed as input ids
    (default all; 1 when hooks add rows inside the model, as IG's layer restart does).
    sizes: rows per layer for an expanded cache (default: the input rows).
    option_logits: the head computes only the options' logits (single-token queries,
    targets that depend on score differences only).
    """
    ids = layout.input_ids(n_input).to(lm.device)
    q = layout.query
    use_cache = cache is not None and not layout.full
    with cached_rows(lm, cache if use_cache else None, sizes or len(ids), layout) as (past, positions), \
            head_rows(lm, q.first_tokens if option_logits else None) as restricted:
        out = lm.model(input_ids=ids, **with_cache(lm.model, past), use_cache=use_cache, **positions,
                       **logits_from(lm.model, layout.width - layout.at))
    if option_logits and not restricted:  # the head could not be swapped: pick the option logits
        return layout.log_scores(out.logits[..., q.first_tokens.to(out.logits.device)], option_logits=True)
    return layout.log_scores(out.logits, option_logits=option_logits)


# ----------------------------------------------------------------------- layer restart

def resid_pre(model):
    """The decoder-layer inputs, where rows restart (`neuron_hooks` lets them add batch rows)."""
    return resolve_site(model, "resid.pre")


def restart_rows(model, restart: dict):
    """Hooks under which batch rows start at their own layer: restart[l] = (l's unedited
    input `[rows per condition, seq, d]`, n conditions, replace). At layer l, n conditions'
    rows equal to that input are appended (they replace the one driver condition at the
    first edited layer), so the layers below a condition's edit are not re-run for it."""
    def make(hidden, n, replace):
        def fn(h):
            new = hidden.to(h.dtype).repeat(n, 1, 1)
            return new if replace else torch.cat([h, new])
        return fn

    return neuron_hooks(model, resid_pre(model), {l: make(*spec) for l, spec in restart.items()})


@torch.no_grad()
def restart_plan(starts, per: int, n_layers: int, inputs: dict) -> tuple[list[int], dict]:
    """(rows per layer, `restart_rows` spec) when condition c enters the batch at layer
    starts[c] (ascending) with `per` rows: below the first start one driver condition
    runs; inputs: `layer_inputs`."""
    starts = [int(s) for s in starts]
    assert starts == sorted(starts), "restart needs conditions sorted by their start layer"
    first = starts[0]
    sizes = [per if l < first else per * sum(s <= l for s in starts) for l in range(n_layers)]
    return sizes, {l: (inputs[l], starts.count(l), l == first) for l in dict.fromkeys(starts)}


def layer_inputs(lm: LM, layout: Layout, cache) -> dict:
    """The unedited input of every decoder layer for one condition's rows run after
    `cache`: {layer: `[rows per condition, seq, d]`}."""
    seen, site = {}, resid_pre(lm.model)
    record = {layer: (lambda h, layer=layer: seen.__setitem__(layer, h.detach())) for layer in range(site.n_layers)}
    ids = layout.input_ids(1).to(lm.device)
    with neuron_hooks(lm.model, site, record), cached_rows(lm, cache, len(ids), layout) as (past, positions):
        lm.model(input_ids=ids, **with_cache(lm.model, past), use_cache=cache is not None, **positions,
                 **logits_from(lm.model, 1))
    return seen


# ----------------------------------------------------------------------- KV cache

@torch.no_grad()
def prefix_cache(lm: LM, prefix: torch.Tensor):
    """Run the prompt prefix once; its KV cache (batch 1), or None for an empty prefix.
    The decoder runs without the LM head (`decoder_of`): nothing reads the prefix's logits,
    and the head of a small model reads a `[vocab, d]` matrix (~10 ms on a CPU core). Nor
    does anything read the prefix's hidden states past the last layer's attention, so the
    forward stops there (`_stop_at_last_ffn`; 1-2 % of a forward saved on the embedded model,
    bench/results/neurgrad.json)."""
    if prefix.numel() == 0:
        return None
    with _stop_at_last_ffn(lm) as kept:
        try:
            out = decoder_of(lm.model)(input_ids=prefix[None].to(lm.device), use_cache=True)
        except _PrefixDone:
            return kept[0]
    return returned_cache(out)


class _PrefixDone(Exception):
    """Raised by `_stop_at_last_ffn`'s hook: every layer's keys and values are in the cache."""


@contextmanager
def _stop_at_last_ffn(lm: LM):
    """Hooks that end a forward at the last layer's FFN: the layer's pre-hook keeps the KV
    cache it is handed (a transformers `Cache`, positional or by any keyword), then the FFN
    module's pre-hook raises `_PrefixDone`. The FFN module is the parent of the ffn.mid site's
    module (`mlp`). Where the layer is handed no `Cache` (a legacy tuple cache), the site has
    no parent module, or accelerate hooks the layer (an offloading hook must see the forward
    end), nothing is raised and the forward runs to its end; yields the list that holds the
    kept cache."""
    from transformers.cache_utils import Cache

    kept: list = []
    site = lm.site("ffn.mid")
    ffn_path = site.module_path.rpartition(".")[0]
    layer = lm.model.get_submodule(f"{site.layers_path}.{site.n_layers - 1}") if site.layers_path else None
    if layer is None or not ffn_path or any(hasattr(m, "_hf_hook") for m in layer.modules()):
        yield kept
        return

    def keep(module, args, kwargs):
        kept[:] = [x for x in (*args, *kwargs.values()) if isinstance(x, Cache)][:1]

    def stop(module, args):
        if kept:
            raise _PrefixDone

    handles = [layer.register_forward_pre_hook(keep, with_kwargs=True),
               layer.get_submodule(ffn_path).register_forward_pre_hook(stop)]
    try:
        yield kept
    finally:
        for h in handles:
            h.remove()


def decoder_of(model):
    """The model without its LM head (`base_model`, e.g. LlamaModel): same modules, so the
    same hooks; the model itself where it has no separate base (then the head runs on the
    last position only)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return lambda **kw: model(**kw, **logits_from(model, 1))
    return base


def with_cache(model, past) -> dict:
    """The forward kwarg that hands a model a KV cache: `cache` from transformers 5.24 on
    (which deprecates `past_key_values`, with a FutureWarning per call site), else
    `past_key_values`."""
    return {_cache_kwarg(type(model)): past}


@functools.lru_cache(maxsize=None)
def _cache_kwarg(model_class) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward returned (`cache` from transformers 5.24 on, else `past_key_values`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def logits_from(model, last: int) -> dict:
    """Forward kwargs that run the LM head on the `last` positions only, where the model
    supports it: no logits are read on the prefix, and the head is ~20 % of a small
    model's forward and a `[batch, seq, vocab]` tensor of memory."""
    return {"logits_to_keep": last} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def expand_cache(cache, batch, config=None):
    """A fresh cache holding `cache`'s keys/values broadcast to `batch` rows
    (an int, or one int per layer).

    The prefix K/V are shared (expand, no copy); each forward appends new
    positions into new tensors, so the original cache is never modified.
    """
    if cache is None:
        return None
    sizes = [batch] * len(cache.layers) if isinstance(batch, int) else list(batch)
    return _rebuilt(cache, lambda i, x: x[:1].expand(sizes[i], -1, -1, -1), config)


def repeat_cache(cache, per: int, config=None):
    """A fresh cache holding each row of `cache` `per` times in a row (row r becomes rows
    r * per .. r * per + per - 1: the condition-major rows of a `Layout`), or None."""
    return _rebuilt(cache, lambda i, x: x.repeat_interleave(per, 0), config)


def tile_cache(cache, sizes, config=None):
    """A fresh cache whose layer i holds sizes[i] // b copies of `cache`'s b rows one after
    the other (row c * b + r is row r: conditions of b rows each, condition-major, as
    `restart_rows` grows them), or None."""
    return _rebuilt(cache, lambda i, x: x.repeat(sizes[i] // x.shape[0], 1, 1, 1), config)


def _rebuilt(cache, rows, config=None):
    """A fresh DynamicCache whose layer i holds rows(i, keys) and rows(i, values) of `cache`'s
    layer i (None for None); a sliding-window layer keeps its count of the tokens seen."""
    if cache is None:
        return None
    from transformers import DynamicCache

    fresh = DynamicCache(config=config) if config is not None else DynamicCache()
    for i, layer in enumerate(cache.layers):
        fresh.update(layer.keys[:1], layer.values[:1], i)
        fresh.layers[i].keys, fresh.layers[i].values = rows(i, layer.keys), rows(i, layer.values)
        if hasattr(layer, "cumulative_length"):  # sliding window: holds the last tokens of a longer prefix
            fresh.layers[i].cumulative_length = layer.cumulative_length
    return fresh


def crop_cache(cache, length: int):
    """A view of `cache` holding only its first `length` positions (None for 0)."""
    if cache is None or length == 0:
        return None
    from transformers import DynamicCache

    view = DynamicCache()
    for i, layer in enumerate(cache.layers):
        view.update(layer.keys[:, :, :length], layer.values[:, :, :length], i)
    return view


@contextmanager
def broadcast_masks():
    """Inside the block, attention masks without padding are built for batch 1 and broadcast.

    Rows that restart at a later layer (`restart_rows`) grow the batch inside the model,
    so a causal mask built for the input batch no longer matches a layer's rows (SDPA:
    "The size of tensor a (12) must match the size of tensor b (4)"). Without a padding
    mask every row's causal (or sliding-window) mask is the same, so batch 1 is exact for
    any batch. Families whose attention builds no mask on this path (LLaMA's SDPA causal
    skip) are unaffected; the others (GPT-2, GPT-J, GPT-NeoX, Gemma 2/3) need it.
    """
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    originals = {k: ALL_MASK_ATTENTION_FUNCTIONS[k] for k in ("sdpa", "eager") if k in ALL_MASK_ATTENTION_FUNCTIONS}

    def one_row(original):
        @functools.wraps(original)
        def mask(batch_size, *args, **kwargs):
            return original(1 if kwargs.get("attention_mask") is None else batch_size, *args, **kwargs)
        return mask

    for key, original in originals.items():
        AttentionMaskInterface.register(key, one_row(original))
    try:
        yield
    finally:
        for key, original in originals.items():
            AttentionMaskInterface.register(key, original)


@contextmanager
def cached_rows(lm: LM, cache, sizes, layout: Layout):
    """(`past_key_values`, extra forward kwargs) for running `layout`'s rows after the
    prefix `cache` (batch 1).

    Where the family supports it, rows attend to the one shared prefix by
    broadcasting (`prefix_attention`); otherwise the prefix is expanded to `sizes` rows
    (an int, or one per layer) and concatenated per row. A tree layout (`rows_layout`
    made one only where the prefix is shared) adds its attention mask and position ids.
    """
    from . import prefix_attention

    if layout.tree:
        length = cache.get_seq_length()
        positions = (length + layout.offsets)[None].to(lm.device)
        with prefix_attention.shared_prefix(lm, cache, mask=layout.mask) as past:
            yield past, {"position_ids": positions}
    elif cache is not None and prefix_attention.supported(lm, cache.get_seq_length() + layout.width):
        with prefix_attention.shared_prefix(lm, cache) as past:
            yield past, {}
    elif isinstance(sizes, int):
        yield expand_cache(cache, sizes, lm.model.config), {}
    else:  # rows per layer: restarted rows join the batch inside the model
        with broadcast_masks():
            yield expand_cache(cache, sizes, lm.model.config), {}


def rows_layout(lm: LM, query: Query, n_conditions: int, cache) -> Layout:
    """The layout of `n_conditions` conditions run after the prefix `cache`: a tree
    (one row per condition) for multi-token options where the family's rows may share
    the cached prefix, else one row per option (`Layout`)."""
    from . import prefix_attention

    tree = (cache is not None and not query.single_token and query.n_options > 1
            and prefix_attention.supported(lm, len(query.prompt) + sum(len(c) for c in query.continuations)))
    return Layout(query, n_conditions, tree=tree)


@contextmanager
def head_rows(lm: LM, tokens: torch.Tensor | None):
    """Inside the block the LM head computes only the logits of `tokens` (`[n]`):
    logits[..., j] is the logit of tokens[j]. A read-out over 4 option labels then
    skips the [rows, vocab] head and its backward (~1/3 of the fast IG path on a
    small model). Yields whether the head was swapped (tokens=None: never)."""
    head = lm.model.get_output_embeddings()
    name = next((n for n, m in lm.model.named_children() if m is head), None)
    # keep the full head where swapping it is not plain: accelerate-dispatched heads carry device hooks
    if tokens is None or name is None or not isinstance(head, torch.nn.Linear) or hasattr(head, "_hf_hook"):
        yield False
        return
    rows = tokens.to(head.weight.device)
    sub = torch.nn.Linear(head.in_features, len(rows), bias=head.bias is not None,
                          device=head.weight.device, dtype=head.weight.dtype)
    sub.weight = torch.nn.Parameter(head.weight[rows], requires_grad=False)
    if head.bias is not None:
        sub.bias = torch.nn.Parameter(head.bias[rows], requires_grad=False)
    setattr(lm.model, name, split_rows(contiguous_input(sub)))
    try:
        yield True
    finally:
        setattr(lm.model, name, head)


def auto_batch_size(lm: LM, n_layers: int, context: int, most: int = 128) -> int:
    """Rows per fast-path batch that fit a memory budget.

    Where rows cannot share the cached prefix (families without shared-prefix
    attention), each row materialises, per layer, its own keys and values over the
    whole context and their gradients: about 4 x n_layers x kv_heads x context x
    head_dim elements. We size batches by that bound for every family (an
    over-estimate where the prefix is shared). Budget: half the free CUDA memory, or
    $NEURONLOC_MEMORY_GIB (default 2) GiB on the CPU; at most `most` rows (larger CPU
    batches measured slower).
    """
    cfg = text_config(lm.model)
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    per_row = 4 * n_layers * kv_heads * context * head_dim * torch.finfo(lm.dtype).bits // 8
    if lm.device.type == "cuda":
        budget = torch.cuda.mem_get_info(lm.device)[0] / 2
    else:
        budget = float(os.environ.get("NEURONLOC_MEMORY_GIB", "2")) * 2**30
    return int(max(1, min(most, budget // per_row)))


def resolve_layers(n_layers: int, layers) -> list[int]:
    """`layers` sorted (None = all), each checked against the model's layer count."""
    if layers is None:
        return list(range(n_layers))
    out = sorted({int(l) for l in layers})
    bad = [l for l in out if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if not out:
        raise ValueError("layers is empty: pass None for all layers or at least one layer index")
    return out

