"""Metrics of the three papers.

NeuronLLM §4.2: Acc, Com, RAC, RCC (with 'Fail'; `change_ci`: signed, with a bootstrap interval;
`mean_ci`: any mean with one). Intervals that decide verdicts (`neuronloc.claims`): `bootstrap_ci`
(rows of one unit kept together, paired samples, seeds as a level), `diff_ci`, `unit_mean_ci`,
`repeated_ratio` (interleaved timing); `collapse_share` / `collapsed`. CNL Eq. 6 and 9: coincidence rate,
overlap, IoU, neuron fraction. NEG §2.2, §3.2, App. A: zero-intercept slope (NEG),
Pearson r, MAE, linear-neuron ratio, polarity, layer/prompt generality (LG/PG).

Inputs may be tensors, arrays or lists; scalar metrics return floats, per-neuron
ones return float64 tensors. Neuron sets are bool masks `[layer, neuron]` or
collections of flat ids (see `neuronloc.neurons`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .neurons import to_ids


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x).double()


# ---------------------------------------------------------------- NeuronLLM §4.2

def accuracy(correct) -> float:
    """Acc: fraction of proxy QAs answered correctly. correct: `[question]` bool."""
    return _t(correct).mean().item()


def comprehension(correct, example_ids, min_correct: int = 2) -> float:
    """Com: fraction of original examples with >= min_correct of their proxy QAs correct
    (NeuronLLM: at least 2 of 3). correct, example_ids: `[question]`."""
    correct, example_ids = torch.as_tensor(correct).long(), torch.as_tensor(example_ids)
    _, group = torch.unique(example_ids, return_inverse=True)
    n_right = torch.zeros(int(group.max()) + 1, dtype=torch.long).index_add_(0, group, correct)
    return (n_right >= min_correct).double().mean().item()


@dataclass(frozen=True)
class Change:
    """A relative change in % (RAC or RCC) and whether it went the wrong way."""
    value: float
    fail: bool

    def __str__(self) -> str:
        return "Fail" if self.fail else f"{self.value:.1f}"


def relative_change(original: float, intervened: float, direction: str) -> Change:
    """RAC / RCC of NeuronLLM §4.2: |original - intervened| / original * 100.

    direction: "down" (Deg, a decrease is expected) or "up" (Enh, an increase is
    expected); a change the other way is a Fail (Table 1), no change is 0.0 and not a
    Fail. original == 0: value is nan (relative change undefined), fail as above.
    """
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' (Deg) or 'up' (Enh), got {direction!r}")
    original, intervened = float(original), float(intervened)
    diff = intervened - original
    fail = diff > 0 if direction == "down" else diff < 0
    value = abs(diff) / original * 100 if original != 0 else math.nan
    return Change(value=value, fail=fail)


rac = relative_change  # RAC: relative_change(acc_original, acc_intervened, direction)
rcc = relative_change  # RCC: relative_change(com_original, com_intervened, direction)


def change_ci(base_correct, edited_correct, example_ids, metric: str = "acc", n_resamples: int = 1000,
              level: float = 0.95, seed: int = 0, min_correct: int = 2) -> tuple[float, float, float]:
    """Signed relative change in % of Acc (metric="acc", RAC with its sign) or Com
    ("com", RCC) from `base_correct` to `edited_correct` (`[question]` bool, the same
    questions), with a percentile bootstrap interval over examples (proxies of one
    example resampled together, paired: scipy.stats.bootstrap).

    Returns (change, low, high); negative = the intervention lowered the metric.
    |change| is `relative_change(...).value`. nan where the base is 0.
    """
    import numpy as np
    from scipy import stats

    if metric not in ("acc", "com"):
        raise ValueError(f"metric must be 'acc' or 'com', got {metric!r}")
    base, edited = torch.as_tensor(base_correct).long(), torch.as_tensor(edited_correct).long()
    _, group = torch.unique(torch.as_tensor(example_ids), return_inverse=True)
    n = int(group.max()) + 1
    per_b = torch.zeros(n, dtype=torch.long).index_add_(0, group, base).double().numpy()
    per_e = torch.zeros(n, dtype=torch.long).index_add_(0, group, edited).double().numpy()
    if metric == "com":
        per_b, per_e = (per_b >= min_correct).astype(float), (per_e >= min_correct).astype(float)

    def stat(b, e, axis=-1):
        mb = b.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mb > 0, 100 * (e.mean(axis=axis) - mb) / mb, np.nan)

    value = float(stat(per_b, per_e))
    if n < 2 or not math.isfinite(value):
        return value, math.nan, math.nan
    with warnings.catch_warnings():  # every resample equal (e.g. the same change in every example): a point
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((per_b, per_e), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                              confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))
    low, high = res.confidence_interval
    return value, float(low), float(high)


def mean_ci(values, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
            method: str = "percentile") -> tuple[float, float, float]:
    """Mean of the finite `values` and its bootstrap interval (scipy.stats.bootstrap,
    `method` "percentile" or "BCa", seeded): (mean, low, high).

    Fewer than two finite values, or all of them equal, have no interval: (mean, nan, nan)
    (mean nan when none is finite).
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.ptp(x) == 0:
        return (float(x.mean()) if len(x) else math.nan), math.nan, math.nan
    ci = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=level, method=method,
                         random_state=seed).confidence_interval
    return float(x.mean()), float(ci.low), float(ci.high)


# ---------------------------------------------------------------- intervals for verdicts

def bootstrap_ci(statistic, *samples, units=None, n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """`statistic(*samples)` and its percentile bootstrap interval, resampling the independent
    unit (scipy.stats.bootstrap over unit indices): (value, lo, hi).

    samples: arrays whose last axis is rows (`[row]`, or `[seed, row]` for a random baseline
    drawn under several seeds). Every sample is resampled with the same row indices, so
    conditions measured on the same questions stay paired. units: `[row]` ids; rows of one unit
    (the proxies of one example, the neurons of one prompt) are kept together (default: each
    row its own unit). Samples with a seed axis also have their seeds resampled (the same
    draw for all of them): seeds are a second level. An interval of zero width is returned
    when every resample gives the same value; (value, nan, nan) with fewer than two units.
    """
    import numpy as np
    from scipy import stats

    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one sample")
    n_rows = arrays[0].shape[-1]
    if any(a.shape[-1] != n_rows for a in arrays) or any(a.ndim not in (1, 2) for a in arrays):
        raise ValueError(f"samples must be [row] or [seed, row] with the same rows, got shapes {[a.shape for a in arrays]}")
    unit_ids = np.arange(n_rows) if units is None else np.asarray(units)
    if len(unit_ids) != n_rows:
        raise ValueError(f"units must name the unit of each of the {n_rows} rows, got {len(unit_ids)}")
    _, group = np.unique(unit_ids, return_inverse=True)
    rows_of = [np.flatnonzero(group == g) for g in range(group.max() + 1)] if n_rows else []
    n_seeds = {a.shape[0] for a in arrays if a.ndim == 2}
    if len(n_seeds) > 1:
        raise ValueError(f"samples with a seed axis must have the same number of seeds, got {sorted(n_seeds)}")
    n_seeds = n_seeds.pop() if n_seeds else 0
    value = float(statistic(*arrays))
    if len(rows_of) < 2 or not math.isfinite(value):
        return value, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        rows = np.concatenate([rows_of[u] for u in rng.integers(0, len(rows_of), len(rows_of))])
        seeds = rng.integers(0, n_seeds, n_seeds) if n_seeds else None
        draws[b] = statistic(*(a[..., rows] if a.ndim == 1 else a[seeds][:, rows] for a in arrays))
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return value, math.nan, math.nan
    alpha = (1 - level) / 2
    if np.ptp(np.append(draws, value)) <= 1e-12 * max(1.0, abs(value)):  # every resample the same, up to
        return value, value, value  # rounding: an interval of zero width at the value
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    return value, float(lo), float(hi)


def diff_ci(a, b, units=None, **kw) -> tuple[float, float, float]:
    """mean(a) - mean(b) over the same rows (paired: one condition minus another on the same
    questions), with `bootstrap_ci`'s interval. a, b: `[row]` or `[seed, row]`."""
    import numpy as np

    return bootstrap_ci(lambda x, y: np.mean(x) - np.mean(y), a, b, units=units, **kw)


def unit_mean_ci(values, units=None, **kw) -> tuple[float, float, float]:
    """Mean of `values` (`[row]`) with `bootstrap_ci`'s interval over units (rows of one unit
    kept together, e.g. NEG's (prompt, neuron) pairs resampled by prompt)."""
    import numpy as np

    return bootstrap_ci(np.mean, values, units=units, **kw)


def t_mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `values` (one per independent unit, e.g. a timing per process) and its Student t
    interval, mean +- t(level, n - 1) x SEM (scipy.stats.t): for a handful of units, where a
    bootstrap's percentile interval is too narrow. (mean, nan, nan) with fewer than two values;
    an interval of zero width when they are all equal."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float).ravel()
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan, math.nan
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def repeated_ratio(fn_a, fn_b, repetitions: int = 5, warmup: int = 1, seed: int = 0,
                   rounds: int = 1) -> tuple[float, float, float, list]:
    """Wall-time ratio time(fn_a) / time(fn_b) from `repetitions` interleaved runs (a, b, a, b,
    ... after `warmup` untimed pairs), so load on the machine hits both alike: (mean ratio, lo,
    hi, per-repetition ratios), the interval a bootstrap over repetitions. rounds > 1: each
    repetition times `rounds` interleaved pairs and takes min(a) / min(b) (timeit's rule for one
    call). For a ratio of a long and a short call it does not remove the effect of load: a short
    call finds a quiet moment more often than a long one (bench/bench_timing_load.py)."""
    import time

    for _ in range(warmup):
        fn_a(), fn_b()
    ratios = []
    for _ in range(repetitions):
        a, b = [], []
        for _ in range(rounds):
            t0 = time.perf_counter(); fn_a(); t1 = time.perf_counter(); fn_b(); t2 = time.perf_counter()
            a.append(t1 - t0), b.append(t2 - t1)
        ratios.append(min(a) / min(b))
    return (*unit_mean_ci(ratios, seed=seed), ratios)


def collapse_share(answers) -> float:
    """Share of questions given the modal answer (option text or index): 1.0 when a condition
    answers every question alike."""
    import collections

    answers = list(answers)
    if not answers:
        return math.nan
    return collections.Counter(answers).most_common(1)[0][1] / len(answers)


def collapsed(edited_answers, base_answers, threshold: float = 0.9) -> bool:
    """A condition that answers one label for >= `threshold` of the questions where the unedited
    model does not (issue 19: such a condition only moves the model between constant answers)."""
    return collapse_share(edited_answers) >= threshold > collapse_share(base_answers)


def format_cell(rac_change: Change, rcc_change: Change) -> str:
    """A Table 1 cell: "53.3/64.0", or "Fail" when either change went the wrong way
    (the paper prints one Fail per cell: 'the intervention produced the opposite effect')."""
    if rac_change.fail or rcc_change.fail:
        return "Fail"
    return f"{rac_change.value:.1f}/{rcc_change.value:.1f}"


# ---------------------------------------------------------------- CNL Eq. 6, 9

def _ids(neurons) -> set[int]:
    """A neuron set (bool mask `[layer, neuron]` or flat ids) as a python set of flat ids."""
    return set(to_ids(neurons).tolist())


def overlap(a, b) -> float:
    """CNL Eq. 9: (|a n b| / |a| + |a n b| / |b|) / 2; nan if a set is empty."""
    a, b = _ids(a), _ids(b)
    if not a or not b:
        return math.nan
    inter = len(a & b)
    return (inter / len(a) + inter / len(b)) / 2


def iou(a, b) -> float:
    """CNL Eq. 9: |a n b| / |a u b|; nan if both sets are empty."""
    a, b = _ids(a), _ids(b)
    return len(a & b) / len(a | b) if a | b else math.nan


def neuron_fraction(mask: torch.Tensor) -> float:
    """CNL Eq. 9 'neuron': selected fraction of all L * J neurons. mask: `[layer, neuron]`."""
    return mask.double().mean().item()


def coincidence(sets_a: list, sets_b: list | None = None) -> float:
    """CNL Eq. 6 coincidence rate of located neuron sets, one set per sample.

    t != t* (sets_b given; sets_a[k], sets_b[k] are the two subsamples of sample k):
        mean_k |A_k n B_k| / ((|A_k| + |B_k|) / 2)
    t == t* (sets_b None): |n_k A_k| / mean_k |A_k|.
    The paper normalises by 1/(L*T), which leaves the scale ambiguous; we normalise
    each intersection by the mean size of the sets it intersects, so 1 means identical
    sets and 0 disjoint ones. Returns nan if the sets are all empty.
    """
    if sets_b is None:
        sets = [_ids(s) for s in sets_a]
        size = sum(map(len, sets)) / len(sets)
        return len(set.intersection(*sets)) / size if size else math.nan
    if len(sets_a) != len(sets_b):
        raise ValueError(f"sets_a and sets_b must pair up, got {len(sets_a)} and {len(sets_b)} sets")
    rates = []
    for a, b in zip(sets_a, sets_b):
        a, b = _ids(a), _ids(b)
        rates.append(2 * len(a & b) / (len(a) + len(b)) if a or b else math.nan)
    return sum(rates) / len(rates)


def pairwise_overlap(sets: list) -> float:
    """CNL §3.1 fidelity: the mean Eq. 9 `overlap` over every pair of `sets` (the located
    sets of the paraphrases of one fact, matched pairwise). Pairs with an empty set are
    skipped; nan if no pair is left."""
    values = [overlap(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def random_overlap(size_a: int, size_b: int, n: int) -> float:
    """Expected Eq. 9 `overlap` of two independent uniformly random sets of sizes a and b
    out of n: E|A n B| = a b / n, so (a b / n / a + a b / n / b) / 2 = (a + b) / (2 n)."""
    if not (0 < size_a <= n and 0 < size_b <= n):
        raise ValueError(f"set sizes must be in 1..{n}, got {size_a} and {size_b}")
    return (size_a + size_b) / (2 * n)


def chance_coincidence(sizes_a, sizes_b=None, n: int = 1) -> float:
    """What `coincidence` gives in expectation (for its intersection sizes) when every set
    is drawn independently and uniformly from n elements with the given sizes.

    pairs (sizes_b given): mean_k (a_k b_k / n) / ((a_k + b_k) / 2);
    n-way (sizes_b None): n * prod_k (a_k / n) / mean_k a_k.
    """
    a = [int(s) for s in sizes_a]
    if not a or any(not 0 <= s <= n for s in a):
        raise ValueError(f"need at least one set size, each in 0..{n}")
    if sizes_b is None:
        mean = sum(a) / len(a)
        if not mean:
            return math.nan
        log_p = sum(math.log(s / n) if s else -math.inf for s in a)
        return n * math.exp(log_p) / mean
    b = [int(s) for s in sizes_b]
    if len(a) != len(b):
        raise ValueError(f"sizes_a and sizes_b must pair up, got {len(a)} and {len(b)}")
    rates = [2 * x * y / n / (x + y) if x + y else math.nan for x, y in zip(a, b)]
    return sum(rates) / len(rates)


# ---------------------------------------------------------------- NEG §2.2, §3.2

def neg_slope(deltas, shifts) -> torch.Tensor:
    """NEG: zero-intercept least-squares slope sum(x y) / sum(x^2) of output shift on Δ.

    deltas: `[D]` activation shifts Δ; shifts: `[..., D]` output shifts -> `[...]`.
    """
    x, y = _t(deltas), _t(shifts)
    return (y * x).sum(-1) / (x * x).sum()


def pearson_r(x, y) -> torch.Tensor:
    """Pearson r along the last dim (broadcast over leading dims), as scipy.stats.pearsonr:
    clipped to [-1, 1], nan where either input is constant. `[..., D]` x `[..., D]` -> `[...]`."""
    x, y = torch.broadcast_tensors(_t(x), _t(y))
    xm, ym = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    r = (xm * ym).sum(-1) / (xm.norm(dim=-1) * ym.norm(dim=-1))
    constant = (x == x[..., :1]).all(-1) | (y == y[..., :1]).all(-1)
    return torch.where(constant, torch.full_like(r, math.nan), r.clamp(-1, 1))


def mae(a, b) -> float:
    """Mean absolute error over all elements (NEG §3.2, estimator vs ground-truth NEG)."""
    return (_t(a) - _t(b)).abs().mean().item()


def linear_ratio(r_values, threshold: float = 0.95) -> float:
    """Fraction of linear neurons: |r| >= threshold (NEG §2.2, r on Δ in [-2, 2]).

    r is measured against the signed Δ, so a linear *negative* neuron has r near -1;
    the paper counts linearity on absolute r values ('we compute the Pearson ...
    absolute r values', and Table 1 has ~50 % negative neurons yet > 90 % linear), so
    we use |r|. nan r (constant output shift) counts as not linear.
    """
    r = _t(r_values)
    return (r.abs() >= threshold).double().mean().item()


def polarity(neg) -> torch.Tensor:
    """+1 where NEG > 0 (raising the activation raises the target probability), else -1
    (NEG §2.2: 'positive if increasing activations boost ..., and negative otherwise')."""
    return torch.where(_t(neg) > 0, 1, -1)


# ---------------------------------------------------------------- NEG App. A (LG / PG)

def coverage(present) -> float:
    """NEG App. A Eq. 7: fraction of bins (layers or prompts) that hold a linear neuron."""
    return _t(present).bool().double().mean().item()


def distribution(counts) -> float:
    """NEG App. A Eq. 8: 1 - Var(counts) / maxVar(counts).

    counts: `[bin]` linear neurons per bin. maxVar is the largest variance the same total
    S can have over the same B bins, all of it in one bin: S^2 (B - 1) / B^2 (population
    variance; the ratio is the same with ddof = 1). 1.0 when maxVar is 0 (S = 0 or B = 1).
    """
    c = _t(counts)
    B, S = c.numel(), c.sum().item()
    max_var = S * S * (B - 1) / B ** 2
    return 1.0 - c.var(unbiased=False).item() / max_var if max_var > 0 else 1.0


def generality(counts, present=None) -> float:
    """LG / PG (NEG App. A Eq. 5-6) = coverage x distribution over bins (layers for LG,
    prompts for PG). counts: `[bin]` linear neurons per bin; present: `[bin]` bool,
    default counts > 0."""
    present = _t(counts) > 0 if present is None else present
    return coverage(present) * distribution(counts)


# ---------------------------------------------------------------- NEG §2.2, Fig. 2, Table 1

def in_range(deltas, shifts, limit: float):
    """The Δ grid and output shifts restricted to |Δ| <= limit: (`[D']`, `[..., D']`)."""
    x, y = _t(deltas), _t(shifts)
    keep = x.abs() <= limit + 1e-9
    if int(keep.sum()) < 2:
        raise ValueError(f"shift range ±{limit} keeps fewer than 2 points of the Δ grid")
    return x[keep], y[..., keep]


def r_by_range(deltas, shifts, limits) -> torch.Tensor:
    """NEG Fig. 2: mean |r| between Δ and output shift on Δ in [-R, R] for each R in `limits`.

    shifts: `[..., D]` (e.g. `[neuron, Δ]` of a sweep, or `[prompt, neuron, Δ]`); the mean
    is over every leading index, nan r (a neuron whose output never moves) left out.
    Returns `[len(limits)]`.
    """
    out = []
    for limit in limits:
        x, y = in_range(deltas, shifts, limit)
        out.append(pearson_r(x, y).abs().nanmean())
    return torch.stack(out)


def linearity_table(deltas, shifts, limit: float = 2.0, threshold: float = 0.95) -> dict:
    """NEG Table 1 from ground-truth sweeps `[..., D]` on Δ in [-limit, limit]:
    linear = share with |r| >= threshold (`linear_ratio`); positive / negative = share with
    NEG > 0 / NEG < 0 (NEG = `neg_slope` on the same range; ground truth, as the paper's
    footnote 9). A neuron whose output never moves (NEG exactly 0) is in neither polarity."""
    x, y = in_range(deltas, shifts, limit)
    neg = neg_slope(x, y)
    return {"linear": linear_ratio(pearson_r(x, y), threshold),
            "positive": (neg > 0).double().mean().item(),
            "negative": (neg < 0).double().mean().item(), "n": int(neg.numel())}


def robustness(acc_transfer: float, acc_own: float, chance: float) -> float:
    """NEG §6.2: max(ACC^Y(N^X) - α, 0) / max(ACC^Y(N^Y) - α, 0), α = chance accuracy:
    how much of context Y's own probe gain the skill neurons found in context X keep
    (the paper's printed formula has N^Y in both places; the text defines the transfer).
    nan when Y's own probe is not above chance."""
    own = max(acc_own - chance, 0.0)
    return max(acc_transfer - chance, 0.0) / own if own > 0 else math.nan


# ---------------------------------------------------------------- NEG §3.1, §4.1 (Fig. 4)

def cumulative_share(values) -> torch.Tensor:
    """NEG Fig. 4: share of Σ|values| held by the k largest |values|, for k = 1..n, `[n]`
    (a flat view of `values`; 1.0 at k = n; nan everywhere if every value is 0)."""
    v = _t(values).abs().reshape(-1).sort(descending=True).values
    return v.cumsum(0) / v.sum()


def top_share(values, fraction: float) -> float:
    """Share of Σ|values| held by the top `fraction` of the entries by |value| (at least one)."""
    share = cumulative_share(values)
    return share[max(1, math.ceil(fraction * len(share))) - 1].item()


def sign_agreement(a, b) -> float:
    """NEG §3.1: fraction of entries where sign(a) == sign(b), over the entries where
    neither is 0 (a neuron whose output never moves has no sign); nan if there is none."""
    a, b = _t(a).reshape(-1), _t(b).reshape(-1)
    both = (a != 0) & (b != 0)
    return (torch.sign(a[both]) == torch.sign(b[both])).double().mean().item() if both.any() else math.nan
