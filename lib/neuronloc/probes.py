"""Skill-neuron probes (NEG §5-§6, App. G-H): predict a question's answer from the
behaviour of a few neurons.

Features (`probe_features`, computed once per question and cached in a `Store`):
  negs  `[question, option, neuron]`  NeurGrad dP(option)/da·sign(a) at the answer position
        (`attribution.answer_position_grads`, one backward for all options; P under the
        question's read-out); neurons are flat ids over (layer, index)
  acts  `[question, neuron]`          the activations at the answer position
  probs `[question, option]`          the model's own option probabilities (same read-out)
The same features feed every probe.

Probes (`fit(train, valid)` then `predict(data)`; the neuron count of the vote probes is
chosen on valid from 2^0 ... 2^13, NEG §5.4):
  rand    uniform random option (seeded)                                        'Rand'
  lm_prob argmax of the model's option probabilities                             'LM-Prob'
  polar   neurons ranked by polarity consistency, sign vote (NEG Eq. 4)          'Polar-Probe'
  magn    neurons ranked by which option's NEG is highest / lowest, vote         'Magn-Probe'
  tree    scikit-learn random forest on argmax-option features (App. G.2)       'Tree-Probe'
  act     activation probe of Wang et al. (2022): above-mean votes, binary splits 'Act'
LM-Prob under another read-out: `interventions.evaluate_options(lm, qs, readout=...).acc`.

Where the paper is ambiguous we follow the NEG reference code (xzhao-tkl/NEG,
NeuronProbe/grad_neurons.py) and say so in each probe's docstring.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .attribution import answer_position_grads
from .engine import make_query
from .models import LM
from .store import Store, key

SIZES = tuple(2 ** n for n in range(14))  # NEG §5.4: neuron counts 2^0 ... 2^13, chosen on valid
CHUNK = 256  # questions per step when reducing over [question, option, neuron]


# ---------------------------------------------------------------- features

@dataclass
class ProbeData:
    """Probe features of Q questions of one task (one prompt setting).

    negs `[Q, n_options, n_neurons]`, acts `[Q, n_neurons]` (any float dtype; reduced in
    float32 chunks), answers `[Q]` long, probs `[Q, n_options]` or None, uids `[Q]`.
    shape: (n_layers, n_inner) of the site, so a flat neuron id maps back to (layer, index).
    """

    negs: torch.Tensor
    acts: torch.Tensor
    answers: torch.Tensor
    probs: torch.Tensor | None = None
    uids: list[str] = field(default_factory=list)
    shape: tuple[int, int] | None = None

    def __post_init__(self):
        q, o, n = self.negs.shape
        assert self.acts.shape == (q, n), f"acts {tuple(self.acts.shape)} != [{q}, {n}]"
        assert self.answers.shape == (q,), f"answers {tuple(self.answers.shape)} != [{q}]"
        assert self.probs is None or self.probs.shape == (q, o), f"probs {tuple(self.probs.shape)} != [{q}, {o}]"

    def __len__(self) -> int:
        return self.negs.shape[0]

    @property
    def n_options(self) -> int:
        return self.negs.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.negs.shape[2]

    @property
    def chance(self) -> float:
        """Accuracy of a uniform random guess: 1 / n_options."""
        return 1.0 / self.n_options

    def subset(self, index) -> "ProbeData":
        """The questions at `index` (a slice, indices or a bool mask)."""
        index = torch.as_tensor(index) if not isinstance(index, slice) else index
        if torch.is_tensor(index) and index.dtype == torch.bool:
            index = index.nonzero().reshape(-1)
        pick = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        return replace(self, negs=self.negs[index], acts=self.acts[index], answers=self.answers[index],
                       probs=None if self.probs is None else self.probs[index],
                       uids=[self.uids[i] for i in pick] if self.uids else [])

    def shuffled(self, seed: int = 0) -> "ProbeData":
        """The same features with the answers permuted: a label-leakage check (every probe
        must fall to chance on held-out data when trained on these)."""
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return replace(self, answers=self.answers[perm])


def feature_key(lm: LM, question, target: str, site: str, layers, chat: bool, readout, dtype) -> str:
    """The cache key of one question's features (keyed like `localization.question_scores`)."""
    return key(model=lm, question=question, scorer="probe_features", target=target,
               params={"site": site, "layers": layers, "chat": chat, "readout": readout, "dtype": str(dtype)})


def question_features(lm: LM, question, target: str = "answer_prob", site: str = "ffn.mid", layers=None,
                      chat: bool = False, readout: str | None = None, dtype=torch.bfloat16) -> dict:
    """One question's features: {"negs" `[n_options, neurons]`, "acts" `[neurons]`,
    "probs" `[n_options]`} (layers not asked for hold 0)."""
    query = make_query(lm, question, chat=chat, readout=readout)
    if query.n_options < 2:
        raise ValueError("probe features need a multiple-choice question (two or more options)")
    acts, grads, probs = answer_position_grads(lm, query, torch.arange(query.n_options), target, layers, site)
    negs = (grads * torch.sign(acts)).nan_to_num(0.0)  # NeurGrad (NEG Eq. 1)
    return {"negs": negs.flatten(1).to(dtype), "acts": acts.nan_to_num(0.0).flatten().to(dtype), "probs": probs}


def probe_features(lm: LM, questions, store: Store | None = None, target: str = "answer_prob",
                   site: str = "ffn.mid", layers=None, chat: bool = False, readout: str | None = None,
                   dtype=torch.bfloat16, progress: bool = True) -> ProbeData:
    """NeurGrad features of every question, each computed once and cached in `store`.

    dtype: storage dtype of negs / acts (bfloat16 keeps float32's range, so NEGs of 1e-8
    keep their sign and order to 3 digits, at half the disk of float32: one question of
    SmolLM2-135M with 4 options is ~0.5 MB). All questions must have the same option count.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("probe_features got no questions")
    counts = {len(q.options) for q in questions}
    if len(counts) > 1:
        raise ValueError(f"probe features need one option count per task, got {sorted(counts)}")
    rows = []
    for q in tqdm(questions, desc="NeurGrad features", disable=not progress, leave=False):
        run = lambda: question_features(lm, q, target, site, layers, chat, readout, dtype)
        rows.append(run() if store is None else
                    store.cached(feature_key(lm, q, target, site, layers, chat, readout, dtype), run))
    return ProbeData(torch.stack([r["negs"] for r in rows]), torch.stack([r["acts"] for r in rows]),
                     torch.tensor([q.answer for q in questions]), torch.stack([r["probs"] for r in rows]),
                     [q.uid for q in questions], lm.site(site).shape)


def dedup(test, train) -> list:
    """The test questions whose record (stem, options, answer) does not occur in train
    (MCEval8K repeats test records in train for 8 tasks). Prompts differ only by
    demonstrations or uid are the same record."""
    seen = {(q.stem, tuple(q.options), q.answer) for q in train}
    return [q for q in test if (q.stem, tuple(q.options), q.answer) not in seen]


# ---------------------------------------------------------------- probes

def _chunks(n: int):
    for s in range(0, n, CHUNK):
        yield slice(s, min(n, s + CHUNK))


def _accuracy(pred: torch.Tensor, answers: torch.Tensor) -> float:
    return (pred == answers).double().mean().item()


def _gold_mask(answers: torch.Tensor, n_options: int) -> torch.Tensor:
    """`[Q, n_options, 1]` bool: the correct option of each question."""
    return torch.nn.functional.one_hot(answers, n_options).bool()[..., None]


class Probe:
    """fit(train, valid) -> self; predict(data) -> `[Q]` option indices; accuracy(data)."""

    name = "probe"

    def fit(self, train: ProbeData, valid: ProbeData | None = None) -> "Probe":
        return self

    def predict(self, data: ProbeData) -> torch.Tensor:
        raise NotImplementedError

    def accuracy(self, data: ProbeData) -> float:
        return _accuracy(self.predict(data), data.answers)


class RandProbe(Probe):
    """Rand: a uniformly random option per question from a seeded generator."""

    name = "rand"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def predict(self, data):
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randint(data.n_options, (len(data),), generator=gen)


class LMProbProbe(Probe):
    """LM-Prob: the option the model itself gives the highest probability (`data.probs`)."""

    name = "lm_prob"

    def predict(self, data):
        if data.probs is None:
            raise ValueError("LM-Prob needs data.probs (probe_features fills it)")
        return data.probs.argmax(-1)


class VoteProbe(Probe):
    """A majority vote of ranked neurons: `fit` ranks every neuron on train (`rank`), then
    picks the count k from `sizes` with the best valid accuracy (ties: the smaller k).

    After fit: ranking `[n_neurons]` (flat ids, best first; ties -> smaller id),
    polarity `[n_neurons]` (+1 / -1 per neuron id), k, valid_curve {k: valid accuracy}.
    """

    def __init__(self, k: int | None = None, sizes=SIZES):
        self.k, self.sizes, self.valid_curve = k, tuple(sizes), {}

    def consistency(self, train: ProbeData) -> torch.Tensor:
        """Signed per-neuron score `[n_neurons]`: |score| ranks, sign is the polarity."""
        raise NotImplementedError

    def votes(self, data: ProbeData, neurons: torch.Tensor) -> torch.Tensor:
        """`[Q, n_options, len(neurons)]` bool: which options each neuron votes for."""
        raise NotImplementedError

    def fit(self, train, valid=None):
        score = self.consistency(train)
        self.polarity = torch.where(score < 0, -1, 1)
        self.ranking = torch.argsort(-score.abs(), stable=True)
        if self.k is None:
            if valid is None:
                raise ValueError(f"{self.name}: pass a valid set to choose the neuron count, or k=")
            sizes = [s for s in self.sizes if s <= train.n_neurons] or [train.n_neurons]
            self.valid_curve = self.curve(valid, sizes)
            self.k = max(self.valid_curve, key=lambda s: (self.valid_curve[s], -s))
        return self

    def predict_with(self, data: ProbeData, neurons: torch.Tensor) -> torch.Tensor:
        """Predictions from the votes of `neurons` (flat ids); ties go to the first option."""
        return torch.cat([self.votes(data.subset(c), neurons).sum(-1).argmax(-1) for c in _chunks(len(data))])

    def curve(self, data: ProbeData, sizes) -> dict[int, float]:
        """Accuracy with the top-k ranked neurons for each k in `sizes` (NEG Fig. 18/19)."""
        top = self.ranking[:max(sizes)]
        correct = {s: 0 for s in sizes}
        for c in _chunks(len(data)):
            part = data.subset(c)
            votes = self.votes(part, top).to(torch.int32).cumsum(-1)  # [q, o, K]
            for s in sizes:
                correct[s] += int((votes[..., s - 1].argmax(-1) == part.answers).sum())
        return {s: correct[s] / len(data) for s in sizes}

    @property
    def neurons(self) -> torch.Tensor:
        """The chosen skill neurons: the top-k flat ids."""
        return self.ranking[:self.k]

    def predict(self, data):
        return self.predict_with(data, self.neurons)

    def windows(self, data: ProbeData, width: int = 64, step: int | None = None) -> torch.Tensor:
        """Substitutability (NEG §6.3, Fig. 8/20): accuracy with the neurons
        ranking[i·step : i·step + width] for each window i down the whole ranking, `[windows]`."""
        step = step or width
        starts = range(0, len(self.ranking) - width + 1, step)
        return torch.tensor([_accuracy(self.predict_with(data, self.ranking[s:s + width]), data.answers)
                             for s in starts])


class PolarProbe(VoteProbe):
    """Polar-Probe (NEG §5.3 Eq. 4): x = sign(NEG) per (question, option, neuron).

    Ranking. The paper ranks neurons by how consistent the polarity of the correct
    option's NEG is over train; read literally, a neuron positive for every option would
    rank first though its vote never separates options. We rank by the expected vote
    margin of the correct option over a wrong one, |Σ_q (x_gold − mean_wrong x)| / 2,
    and its sign is the global polarity x̄ (for two options this is the reference code's
    Σ_q (2·x_gold − Σ_a x_a)). Prediction: argmax_a Σ_k 1[x_{q,a,k} = x̄_k] (Eq. 4).
    """

    name = "polar"

    def consistency(self, train):
        score = torch.zeros(train.n_neurons, dtype=torch.float64)
        for c in _chunks(len(train)):
            part = train.subset(c)
            x = torch.sign(part.negs.float())
            gold = _gold_mask(part.answers, train.n_options)
            x_gold = (x * gold).sum(1)
            x_wrong = (x * ~gold).sum(1) / (train.n_options - 1)
            score += (x_gold - x_wrong).sum(0).double() / 2
        return score

    def votes(self, data, neurons):
        return torch.sign(data.negs[:, :, neurons].float()) == self.polarity[neurons].float()


class MagnProbe(VoteProbe):
    """Magn-Probe (NEG §5.3): does the correct option hold a neuron's highest (or lowest) NEG?

    Ranking (as the reference code): c_k = Σ_q mean_{a≠gold} sign(NEG_gold − NEG_a),
    +1 when the correct option's NEG is above every other, −1 when below; rank by |c_k|,
    preference = sign(c_k) (highest / lowest). Prediction (the 'same voting rule as
    Eq. 4'): each neuron votes for the option with its highest NEG (lowest for a
    lowest-preferring neuron); argmax of the votes.
    """

    name = "magn"

    def consistency(self, train):
        score = torch.zeros(train.n_neurons, dtype=torch.float64)
        for c in _chunks(len(train)):
            part = train.subset(c)
            g = part.negs.float()
            gold = _gold_mask(part.answers, train.n_options)
            g_gold = (g * gold).sum(1, keepdim=True)
            score += torch.sign(g_gold - g).sum(1).sum(0).double() / (train.n_options - 1)
        return score

    def votes(self, data, neurons):
        g = data.negs[:, :, neurons].float() * self.polarity[neurons].float()
        return g == g.amax(1, keepdim=True)


class ActProbe(VoteProbe):
    """Act (Wang et al. 2022, as the NEG reference code runs it for Table 3).

    Binary task: a neuron predicts 'second class' when its activation is above its mean
    over train; rank by |accuracy − 0.5| of that rule, polarity = its sign; predict by
    the majority of the top-k neurons (a tie predicts the first class). More options:
    the option indices are split in halves ([0..m) vs [m..n)) recursively, each split a
    binary node with its own neurons, thresholds and k (the same k for all nodes);
    a question is routed down the splits.
    """

    name = "act"

    def fit(self, train, valid=None):
        self.nodes = {}
        self._fit_node(train, tuple(range(train.n_options)))
        if self.k is None:
            if valid is None:
                raise ValueError("act: pass a valid set to choose the neuron count, or k=")
            sizes = [s for s in self.sizes if s <= train.n_neurons] or [train.n_neurons]
            self.valid_curve = {s: _accuracy(self._predict(valid, s), valid.answers) for s in sizes}
            self.k = max(self.valid_curve, key=lambda s: (self.valid_curve[s], -s))
        return self

    def _fit_node(self, train, classes):
        if len(classes) < 2:
            return
        mid = len(classes) // 2
        mask = torch.isin(train.answers, torch.tensor(classes))
        acts = train.acts[mask].float()
        y = torch.isin(train.answers[mask], torch.tensor(classes[mid:]))
        if len(acts):
            threshold = acts.mean(0)
            score = ((acts > threshold) == y[:, None]).double().mean(0) - 0.5
        else:  # no train question in this branch: every neuron is uninformative
            threshold, score = torch.zeros(train.n_neurons), torch.zeros(train.n_neurons, dtype=torch.float64)
        self.nodes[classes] = (torch.argsort(-score.abs(), stable=True), torch.where(score < 0, -1, 1), threshold)
        self._fit_node(train, classes[:mid])
        self._fit_node(train, classes[mid:])

    def _predict(self, data, k):
        pred = torch.empty(len(data), dtype=torch.long)
        self._route(data.acts.float(), torch.arange(len(data)), tuple(range(data.n_options)), k, pred)
        return pred

    def _route(self, acts, index, classes, k, pred):
        if len(classes) == 1:
            pred[index] = classes[0]
            return
        ranking, polarity, threshold = self.nodes[classes]
        top = ranking[:k]
        vote = torch.where(acts[index][:, top] > threshold[top], 1, -1) * polarity[top]
        second = vote.sum(-1) > 0
        mid = len(classes) // 2
        self._route(acts, index[~second], classes[:mid], k, pred)
        self._route(acts, index[second], classes[mid:], k, pred)

    def _merged(self, k: int | None) -> torch.Tensor:
        """The nodes' rankings (each cut to k) interleaved rank by rank, first occurrence kept."""
        ranked = torch.stack([ranking[:k] for ranking, _, _ in self.nodes.values()]).T.reshape(-1).numpy()
        _, first = np.unique(ranked, return_index=True)
        return torch.as_tensor(ranked[np.sort(first)])

    @property
    def ranking(self) -> torch.Tensor:
        """Every neuron, the splits' rankings interleaved (what TreeProbe(source="acts") picks from)."""
        return self._merged(None)

    @property
    def neurons(self) -> torch.Tensor:
        """The skill neurons: the union of every split's top-k."""
        return self._merged(self.k)

    def predict(self, data):
        return self._predict(data, self.k)


class TreeProbe(Probe):
    """Tree-Probe (NEG App. G.2): scikit-learn RandomForestClassifier(n_trees, max_depth=depth).

    source="negs": a neuron's feature is the index of the option with its largest NEG
    (the smallest is ignored, as the paper; two options: 1[NEG_0 < NEG_1]);
    source="acts": the activation value (the reference code's activation forest).
    neurons=None uses every neuron (App. G.1); an int uses the top ones of the Magn
    ranking on train (App. H.3 fixes 2^10 features; the paper does not say how they
    are picked: we take the Magn ranking, or the Act ranking for source="acts").
    Defaults are scikit-learn's: 100 trees, no depth limit (NEG §5.4).
    """

    name = "tree"

    def __init__(self, n_trees: int = 100, depth: int | None = None, neurons: int | None = None,
                 source: str = "negs", seed: int = 0, n_jobs: int | None = None):
        if source not in ("negs", "acts"):
            raise ValueError(f"source must be 'negs' or 'acts', got {source!r}")
        self.n_trees, self.depth, self.n_neurons, self.source = n_trees, depth, neurons, source
        self.seed, self.n_jobs = seed, n_jobs

    def features(self, data: ProbeData):
        cols = slice(None) if self.columns is None else self.columns
        if self.source == "acts":
            return data.acts[:, cols].float().numpy()
        return torch.cat([data.negs[c][:, :, cols].float().argmax(1) for c in _chunks(len(data))]).numpy()

    def fit(self, train, valid=None):
        from sklearn.ensemble import RandomForestClassifier

        self.columns = None
        if self.n_neurons is not None:
            ranker = ActProbe(k=self.n_neurons) if self.source == "acts" else MagnProbe(k=self.n_neurons)
            self.columns = ranker.fit(train).ranking[:self.n_neurons]
        self.forest = RandomForestClassifier(n_estimators=self.n_trees, max_depth=self.depth,
                                             random_state=self.seed, n_jobs=self.n_jobs)
        self.forest.fit(self.features(train), train.answers.numpy())
        return self

    @property
    def used_neurons(self) -> torch.Tensor:
        """Flat ids of the neurons some tree splits on (App. G.1 reports their count)."""
        used = torch.tensor(self.forest.feature_importances_) > 0
        ids = torch.arange(len(used)) if self.columns is None else self.columns
        return ids[used]

    def predict(self, data):
        return torch.as_tensor(self.forest.predict(self.features(data))).long()


PROBES = {"rand": RandProbe, "lm_prob": LMProbProbe, "polar": PolarProbe, "magn": MagnProbe,
          "tree": TreeProbe, "act": ActProbe}


def evaluate_probes(train: ProbeData, valid: ProbeData, test: ProbeData, names=tuple(PROBES),
                    options: dict | None = None) -> list[dict]:
    """Fit each probe on train (neuron count on valid), score it on test (NEG Fig. 6,
    Tables 3, 4, 8, 9). options: {name: constructor kwargs}. Rows: {"probe", "acc",
    "valid_acc", "k" (vote probes: chosen neuron count; tree: neurons split on), "chance"}.
    """
    rows = []
    for name in names:
        probe = PROBES[name](**(options or {}).get(name, {})).fit(train, valid)
        k = getattr(probe, "k", None) if isinstance(probe, VoteProbe) else \
            len(probe.used_neurons) if isinstance(probe, TreeProbe) else None
        rows.append({"probe": name, "acc": probe.accuracy(test), "valid_acc": probe.accuracy(valid),
                     "k": k, "chance": test.chance})
    return rows


def training_curve(make_probe, train: ProbeData, valid: ProbeData, test: ProbeData, sizes, seed: int = 0) -> list[dict]:
    """NEG Fig. 7: test accuracy of `make_probe()` fitted on n training questions (a seeded
    random subset, nested: the first n of one permutation) for each n in `sizes`."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    rows = []
    for n in sizes:
        if n > len(train):
            continue
        probe = make_probe().fit(train.subset(perm[:n]), valid)
        rows.append({"n": n, "acc": probe.accuracy(test), "k": getattr(probe, "k", None)})
    return rows


def tree_grid(train: ProbeData, test: ProbeData, max_log2: int = 12, neurons: int | None = 1024,
              seed: int = 0) -> list[dict]:
    """NEG §6.4, App. H.3 (Fig. 9, 22, 23): Tree-Probe accuracy on `test` for 2^N trees of
    depth 2^M, N + M < max_log2, on the top `neurons` of the Magn ranking (App. H.3: 2^10).
    Rows: {"trees", "depth", "acc"}."""
    rows = []
    for n in range(max_log2):
        for m in range(max_log2 - n):
            probe = TreeProbe(n_trees=2 ** n, depth=2 ** m, neurons=neurons, seed=seed).fit(train)
            rows.append({"trees": 2 ** n, "depth": 2 ** m, "acc": probe.accuracy(test)})
    return rows


def robustness_matrix(contexts: dict, k: int = 32) -> dict:
    """NEG §6.2, App. J (Fig. 21): Magn-Probe skill neurons found in context X (k of them,
    fitted on X's train) classify context Y's test questions, for every pair (X, Y).

    contexts: {name: (train, test) ProbeData}, the same questions' features under different
    prompts (same option count). Returns {"acc": {(X, Y): ACC^Y(N^X)}, "robustness": {(X, Y):
    metrics.robustness(ACC^Y(N^X), ACC^Y(N^Y), chance)}}.
    """
    from .metrics import robustness

    probes = {x: MagnProbe(k=k).fit(train) for x, (train, _) in contexts.items()}
    acc = {(x, y): probes[x].accuracy(test) for x in contexts for y, (_, test) in contexts.items()}
    chance = {y: test.chance for y, (_, test) in contexts.items()}
    return {"acc": acc, "robustness": {(x, y): robustness(acc[x, y], acc[y, y], chance[y]) for (x, y) in acc}}
