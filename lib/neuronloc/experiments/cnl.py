"""Notebook 03, CNL §5: erase (Table 3), enhance (Table 2), IPP (Table 4) and the claim rules.

  interval      bootstrap interval of a mean, for Table 1's split overlaps and Table 3's paired diffs
  correct       per question 1/0 with FFN neurons' weights zeroed (§5.4 'Erase')
  random_draws  the same for `n` sets of as many random neurons (the 'Random' control)
  erase_run     every erase of one evaluated data set: Table 3, Fig. 5 (erase) and Table 4 (KN)
  finetune      one restricted fine-tuning run until the loss plateaus (`plateaued`), evaluated after
                the epochs of Table 2 (`length_batches`: rows of similar length)
  data_splits   cnl_splits, class-balanced (`balanced`) for label data sets, evaluation capped at the data
  arm_summary   per fine-tuned data set and arm: accuracy against the base and the best trivial answer
  ipp           Table 4's IPP from the erase accuracies
  high_overlap  the old rule of claims CN-01 and CN-12 (kept for the sensitivity table)
  fmt           a number as the claims' text prints it
  halves_draws  Table 1 / Fig. 4 / Fig. 6 agreement under a bootstrap over examples within halves
  claims        the rows of CN-01, CN-12..25 (rules in rules/CN.json)

Accuracies are in % (points) where the name says so; per-question results are `[question]`
float arrays of 1.0 (right) and 0.0 (wrong).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..interventions import answer_batches, evaluate_options, evaluate_zeroed, random_neurons, restricted_finetune
from .. import metrics
from ..claims import Claim, Estimate, measured, na
from ..localization.commonality import chance_overlap, split_halves
from ..metrics import iou, mean_ci, overlap
from ..models import LM
from ..neurons import mask_to_ids
from ..report import rounded
from ..scales import CNL
from ..sites import Site
from ..tasks.core import MCQuestion
from ..tasks.loaders import Example


def interval(values, n_resamples: int, seed: int) -> tuple[float, float]:
    """95 % BCa bootstrap interval (low, high) of the mean of the finite `values`
    (`metrics.mean_ci`, method "BCa"). Values that cannot vary under resampling (fewer
    than two, or all equal) give the point (mean, mean), not nan: a claim reads the bound."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.ptp(x) == 0:
        mean = x.mean() if len(x) else math.nan
        return mean, mean
    _, low, high = mean_ci(x, n_resamples=n_resamples, seed=seed, method="BCa")
    return low, high


def correct(lm: LM, site: Site, questions: Sequence[MCQuestion], neurons) -> np.ndarray:
    """Per question 1.0/0.0, `[question]`, with the `neurons`' weights zeroed (the paper's
    'set their parameter to 0', so a = 0 at every position: `evaluate_zeroed`); [] reads
    the base model."""
    return _zeroed(lm, site, questions, [neurons])[0]


def _zeroed(lm: LM, site: Site, questions: Sequence[MCQuestion], sets: Sequence) -> list[np.ndarray]:
    """`correct` for every neuron set of `sets`, all in one batched `evaluate_zeroed` pass."""
    return [e.correct.numpy().astype(float) for e in evaluate_zeroed(lm, questions, sets, site)]


def _draws(site: Site, count: int, n: int, seed: int) -> list:
    """The neuron sets of `random_draws`: n sets of `count` neurons (seeds seed + 1 .. seed + n)."""
    return [random_neurons(site, count, seed=seed + 1 + r) if count else [] for r in range(n)]


def random_draws(lm: LM, site: Site, questions: Sequence[MCQuestion], count: int, n: int,
                 seed: int) -> list[np.ndarray]:
    """`correct` for n sets of `count` neurons drawn uniformly over all layers
    (`random_neurons`, seeds seed + 1 .. seed + n): a list of n `[question]` arrays.
    count = 0 (nothing located): n copies of the base model's."""
    return _zeroed(lm, site, questions, _draws(site, count, n, seed))


def erase_run(lm: LM, site: Site, questions: Sequence[MCQuestion], name: str,
              masks: dict[str, dict[float, torch.Tensor]], kn: torch.Tensor, trained: Sequence[str],
              config: CNL, seed: int, base: np.ndarray | None = None) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Every erase (CNL §5.4) read on data set `name`'s `questions`, as `correct` arrays:

      "base"                 nothing zeroed: `base` where given (the notebook's one reading of
                             the unedited model on these questions; not read again), else read
      "located {s}", "random {s}"  (name in `trained`) its own sigma-s mask, for every s in
                             config.sigmas (Table 3); random: config.n_random draws of as many
                             neurons at config.sigma, one at the other sigmas (`random_draws`)
      "kn", "kn random"      (name in `trained`) its KN mask `kn` and n_random draws of its size
                             (Table 4's KN row)
      "of {other}"           the config.sigma mask of each data set in `trained` (Fig. 5, erase)

    masks: {data set: {sigma: bool `[layer, neuron]`}}; kn: bool `[layer, neuron]`. Every
    set is read in one `evaluate_zeroed` pass (the sets of a question as rows of one batch).
    """
    if base is not None and len(base) != len(questions):
        raise ValueError(f"base has {len(base)} answers for {len(questions)} questions")
    sets: dict[str, list] = {} if base is not None else {"base": [[]]}  # key -> its neuron sets (random draws: several)
    if name in trained:
        for sigma in config.sigmas:
            own = mask_to_ids(masks[name][sigma])
            sets[f"located {sigma:g}"] = [own]
            sets[f"random {sigma:g}"] = _draws(site, len(own), config.n_random if sigma == config.sigma else 1, seed)
        kn_ids = mask_to_ids(kn)
        sets["kn"] = [kn_ids]
        sets["kn random"] = _draws(site, len(kn_ids), config.n_random, seed)
    own_key = f"located {config.sigma:g}"
    for other in trained:
        if not (name == other and own_key in sets):  # its own sigma mask is already read
            sets[f"of {other}"] = [mask_to_ids(masks[other][config.sigma])]
    read = iter(_zeroed(lm, site, questions, [s for v in sets.values() for s in v]))
    out = {k: [next(read) for _ in v] for k, v in sets.items()}
    out = {k: v if k in ("kn random", *(f"random {s:g}" for s in config.sigmas)) else v[0] for k, v in out.items()}
    if base is not None:
        out = {"base": np.asarray(base, dtype=float), **out}
    for other in trained:  # the "of" keys last, in trained order; a data set's own is its located sigma mask
        out[f"of {other}"] = out.pop(f"of {other}") if f"of {other}" in out else out[own_key]
    return out


class _Plateau(Exception):
    """Raised after the epoch at which a run's training loss has plateaued: ends the run."""


def plateaued(epoch_losses: Sequence[float], window: int, tolerance: float) -> bool:
    """The stopping rule of `finetune`, fixed before the run: the mean training loss of the
    last `window` epochs is no more than `tolerance` (relative) below the mean of the `window`
    epochs before them, i.e. the last `window` epochs improved it by less than that share.
    False until 2 * window epochs have run."""
    x = np.asarray(epoch_losses, dtype=float)
    if len(x) < 2 * window:
        return False
    last, before = x[-window:].mean(), x[-2 * window:-window].mean()
    return bool(last >= (1 - tolerance) * before)


def length_batches(lm: LM, examples: Sequence[Example], batch_size: int = 8) -> list:
    """`answer_batches` of `examples` (answer " " + e.answer) grouped by length: sorted by
    characters (prompt + answer; stable), cut into batches of `batch_size`, the batches in a
    fixed shuffled order (`np.random.default_rng(0)`, the same for every arm). Rows of
    similar length pad less, so a step costs less; each epoch runs the batches in this order."""
    ordered = sorted(examples, key=lambda e: len(e.prompt) + len(e.answer))
    batches = answer_batches(lm, [(e.prompt, " " + e.answer) for e in ordered], batch_size=batch_size)
    return [batches[i] for i in np.random.default_rng(0).permutation(len(batches))]


def finetune(lm: LM, site: Site, examples: Sequence[Example], neurons, questions: dict[str, Sequence[MCQuestion]],
             name: str, mode: str, epochs: Sequence[int], lr: float, seed: int, window: int = 2,
             tolerance: float = 0.02, batch_size: int = 8) -> dict:
    """One run of CNL §5.4 'Enhance' (Table 2): `restricted_finetune` of `neurons` (bool
    `[layer, neuron]`) in `mode` ("located", "random": as many neurons drawn with `seed`,
    "without") on the answers of `examples` (`length_batches` of `batch_size`; one epoch =
    one pass), with Adam at lr, for at most max(epochs) epochs, stopped earlier when
    the training loss has plateaued (`plateaued(window, tolerance)` after an epoch).

    Evaluated on `questions[name]` after each epoch in `epochs` that ran; at the last epoch
    run (the plateau, or max(epochs)) on every data set of `questions` (Fig. 5, App. G). A
    run stopped at epoch s is read at s for every later epoch of `epochs` (training stopped:
    the model does not change). Returns {"acc": {epoch: {data set: accuracy %}}, "correct":
    {epoch: {data set: 1/0 per question}}, "pred": {data set: option text chosen per question
    at the end}, "losses": [mean training loss per epoch run], "step_losses": [per step],
    "stopped": last epoch run, "plateau": whether the rule stopped it, "steps", "seconds":
    wall time of the run, "eval_seconds": the part of it spent evaluating}. lm's weights are
    as before on return.
    """
    import time

    saved = copy.deepcopy(lm.model.state_dict())
    batches = length_batches(lm, examples, batch_size)
    accs, correct, pred, step_losses, state = {}, {}, {}, [], {"plateau": False}
    last_epoch = max(epochs)

    def epoch_losses() -> list[float]:
        return [float(np.mean(step_losses[i:i + len(batches)])) for i in range(0, len(step_losses), len(batches))]

    def evaluate(epoch: int, every: bool) -> None:
        t0 = time.perf_counter()
        for t in (list(questions) if every else [name]):
            result = evaluate_options(lm, questions[t])
            correct.setdefault(epoch, {})[t] = result.correct.numpy().astype(float)
            if every:
                pred[t] = np.array([q.options[int(i)] for q, i in zip(questions[t], result.pred)])
        accs[epoch] = {t: 100 * float(c.mean()) for t, c in correct[epoch].items()}
        state["eval_seconds"] = state.get("eval_seconds", 0.0) + time.perf_counter() - t0

    def after(epoch: int) -> None:
        stop = epoch == last_epoch or plateaued(epoch_losses(), window, tolerance)
        if stop or epoch in epochs:
            evaluate(epoch, every=stop)
        if stop:
            state["plateau"] = epoch < last_epoch or plateaued(epoch_losses(), window, tolerance)
            state["stopped"] = epoch
            raise _Plateau

    start = time.perf_counter()
    try:
        restricted_finetune(lm, site, mask_to_ids(neurons), batches, lr=lr, epochs=last_epoch, mode=mode,
                            seed=seed, progress=False, after_epoch=after, after_step=step_losses.append)
    except _Plateau:
        pass
    finally:
        lm.model.load_state_dict(saved)
    stopped = state["stopped"]
    for epoch in epochs:  # epochs after the stop read the stopped model
        if epoch > stopped:
            correct[epoch], accs[epoch] = correct[stopped], accs[stopped]
    return {"acc": accs, "correct": correct, "pred": pred, "losses": epoch_losses(), "step_losses": step_losses,
            "stopped": stopped, "plateau": state["plateau"], "steps": len(step_losses),
            "seconds": time.perf_counter() - start, "eval_seconds": state.get("eval_seconds", 0.0)}


def balanced(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """`n` (rounded down to a multiple of the labels) of `examples` with the same number per
    gold answer, drawn with `random.Random(seed)`, in their original order; at most as many
    per answer as the rarest answer has."""
    import random

    by: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by.setdefault(e.answer, []).append(i)
    per = min(n // len(by), min(len(v) for v in by.values()))
    rng = random.Random(seed)
    keep = sorted(i for v in by.values() for i in rng.sample(v, per))
    return [examples[i] for i in keep]


def data_splits(name: str, n_localize: int, n_finetune: int, n_eval: int, seed: int, max_chars: int | None,
                labels: Sequence[str] | None = None) -> dict[str, list[Example]]:
    """`cnl_splits` with the evaluation set capped at what the data hold (within max_chars)
    and, for a label data set (`labels`), the fine-tuning and evaluation sets class-balanced
    (`balanced`: a constant answer scores 1 / labels; the localization examples are the same
    as `cnl_splits` draws). Each list in the data's seeded order."""
    from ..tasks.loaders import TRAIN_SPLIT, cnl_splits, load_examples

    def available(split: str) -> int:
        return sum(1 for e in load_examples(name, split, None, seed)
                   if max_chars is None or len(e.prompt) + len(e.answer) <= max_chars)
    if name in TRAIN_SPLIT:
        n_train, n_test = available(TRAIN_SPLIT[name]) - n_localize, available("test")
    else:
        n_train = n_test = available("test") - n_localize - n_finetune
    if labels is None:
        return cnl_splits(name, n_localize, n_finetune, min(n_eval, max(n_test, 0)), seed, max_chars)
    pool_ft = n_train if n_finetune and name in TRAIN_SPLIT else n_finetune
    s = cnl_splits(name, n_localize, pool_ft, max(n_test, 0) if n_eval else 0, seed, max_chars)
    return {"localize": s["localize"], "finetune": balanced(s["finetune"], n_finetune, seed) if n_finetune else [],
            "eval": balanced(s["eval"], n_eval, seed) if n_eval else []}


def ipp(erased: dict[str, float | list[float]], located_key: str, random_key: str) -> float:
    """Table 4's IPP in points, 'Performance - Optimal-performance': the accuracy lost when
    the located neurons are zeroed minus the largest loss among the random draws.
    erased: accuracies % of one data set, "base", `located_key` a number, `random_key` a list."""
    drop = erased["base"] - erased[located_key]
    return drop - max(erased["base"] - r for r in erased[random_key])


def high_overlap(overlap: float, chance: float) -> bool:
    """Claims CN-01 and CN-12: the halves' overlap (%) is at least 50 % and at least 5x the
    overlap of random sets of the same sizes (`chance`, %)."""
    return bool(overlap >= 50 and overlap >= 5 * chance)


def fmt(x) -> str:
    """`x` as the claims' text prints it: `rounded` to two significant digits."""
    return f"{rounded(x)}"


def halves_draws(example_scores: dict[str, torch.Tensor], select, sizes=(), cross=(), n_resamples: int = 1000,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 (halves), Fig. 6 (sizes) and Fig. 4 (IoU between data sets) under a bootstrap
    over examples. Each data set's examples are split once into halves a, b (`split_halves`,
    seed); draw 0 is that split as it is (the point estimate), draws 1..n_resamples resample
    each half's examples with replacement (an example never lands in both halves). In each
    draw, for every size s in `sizes` (at most the data set's examples) and the full size:
    the masks (`select`) of the first s // 2 examples of a and the first s - s // 2 of b.

    Returns (rows {draw, data, size, overlap, chance, iou} with `chance` the random-set
    overlap of the two masks' sizes, rows {draw, a, b, iou} of the full-data masks for each
    pair in `cross`)."""
    rng = np.random.default_rng(seed)
    halves = {name: tuple(h.numpy() for h in split_halves(len(s), seed)) for name, s in example_scores.items()}
    rows, pairs = [], []
    for draw in range(n_resamples + 1):
        full = {}
        for name, s in example_scores.items():
            a, b = halves[name]
            if draw:
                a, b = rng.choice(a, len(a)), rng.choice(b, len(b))
            n = len(s)
            for size in sorted({int(x) for x in sizes if 2 <= x < n} | {n}):
                ka, kb = min(size // 2, len(a)), min(size - size // 2, len(b))
                ma, mb = select(s[torch.as_tensor(a[:ka])]), select(s[torch.as_tensor(b[:kb])])
                rows.append({"draw": draw, "data": name, "size": size, "overlap": overlap(ma, mb),
                             "chance": chance_overlap(int(ma.sum()), int(mb.sum()), ma.numel()), "iou": iou(ma, mb)})
            if any(name in p for p in cross):
                full[name] = select(s[torch.as_tensor(np.concatenate([a, b]))])
        pairs += [{"draw": draw, "a": x, "b": y, "iou": iou(full[x], full[y])} for x, y in cross]
    return pd.DataFrame(rows), pd.DataFrame(pairs, columns=["draw", "a", "b", "iou"])


def draws_estimate(values: pd.Series, n: int, n_of: str, level: float = 0.95) -> Estimate:
    """An Estimate from per-draw values (index: draw; 0 = the point estimate): the value of
    draw 0 and the percentile interval of the finite values of the other draws (nan when the
    point estimate is not finite or fewer than 2 finite draws)."""
    value = float(values.loc[0])
    rest = values.drop(index=0).astype(float)
    rest = rest[np.isfinite(rest)]
    if not np.isfinite(value):
        raise ValueError("the point estimate is not finite")
    if len(rest) < 2:
        return Estimate(value, n=n, n_of=n_of)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(rest, [alpha, 1 - alpha])
    return Estimate(value, float(lo), float(hi), n=n, n_of=n_of)


def level_draws(halves: pd.DataFrame) -> pd.DataFrame:
    """`[draw] x data set`: the full-size halves overlap minus the random-set overlap, points."""
    full = halves[halves["size"] == halves.groupby("data")["size"].transform("max")]
    return (100 * (full["overlap"] - full["chance"])).to_frame("v").assign(draw=full["draw"].values, data=full["data"].values) \
        .pivot(index="draw", columns="data", values="v")


def slope_draws(halves: pd.DataFrame) -> pd.Series:
    """Per draw: the mean over data sets (with >= 2 sizes) of the least-squares slope of the
    halves overlap (points) against log2(size) (Fig. 6: CN-22)."""
    def one(d):
        slopes = [np.polyfit(np.log2(g["size"].to_numpy(float)), 100 * g["overlap"].to_numpy(float), 1)[0]
                  for _, g in d.groupby("data") if g["size"].nunique() >= 2 and np.isfinite(g["overlap"]).all()]
        return float(np.mean(slopes)) if slopes else np.nan
    return pd.Series({draw: one(d) for draw, d in halves.groupby("draw")})


def normalised_iou_draws(halves: pd.DataFrame, cross: pd.DataFrame, first=("gsm8k", "emotion"),
                         others=(("gsm8k", "code"), ("emotion", "code"))) -> pd.Series:
    """Per draw (CN-20): IoU of `first` minus the larger IoU of `others`, each IoU of two data
    sets' full masks divided by the geometric mean of their own halves IoU (what each mask
    agrees with itself: the ceiling of its IoU with anything)."""
    full = halves[halves["size"] == halves.groupby("data")["size"].transform("max")].set_index(["draw", "data"])["iou"]
    c = cross.set_index(["draw", "a", "b"])["iou"]

    def norm(draw, x, y):
        ceiling = np.sqrt(full.loc[(draw, x)] * full.loc[(draw, y)])
        return c.loc[(draw, x, y)] / ceiling if ceiling > 0 else np.nan
    draws = sorted(set(cross["draw"]))
    return pd.Series({d: norm(d, *first) - max(norm(d, *o) for o in others) for d in draws})


def _per_data(x, codes):
    """Mean over data sets (codes) of the per-data-set mean of x (last axis rows)."""
    return float(np.mean([x[..., codes == c].mean() for c in np.unique(codes)]))


ARMS = ("Located", "Random", "W/o located")


def _arm(run_or_runs, key: str, epoch: int, data: str) -> np.ndarray:
    """Per-question 1/0 of one arm: `[question]` for one run, `[draw, question]` for the
    Random arm's draws (a list of runs: the draws are a seed level of the bootstrap)."""
    if isinstance(run_or_runs, (list, tuple)):
        return np.stack([r[key][epoch][data] for r in run_or_runs])
    return run_or_runs[key][epoch][data]


def _runs(run_or_runs) -> list[dict]:
    return list(run_or_runs) if isinstance(run_or_runs, (list, tuple)) else [run_or_runs]


def arm_accuracy(run_or_runs, epoch: int, data: str) -> float:
    """Accuracy % of one arm on `data` after `epoch`: of its run, or the mean over the Random
    arm's draws (a list of runs)."""
    return float(np.mean([r["acc"][epoch][data] for r in _runs(run_or_runs)]))


def arm_summary(enhanced: dict, base: dict[str, np.ndarray], base_pred: dict[str, np.ndarray] | None,
                trivial: dict[str, float], competence_p=None) -> pd.DataFrame:
    """One row per (fine-tuned data set, arm, draw): the accuracy % on its own data set after
    the last epoch run, the base model's and the best trivial answer's (%), the p-value of
    acc > trivial (`competence_p(data, correct)`, one-sided binomial; optional), the share of
    questions given the modal answer (collapse share) and whether the arm collapsed (>= 0.9
    where the base model does not), the epochs and steps run, whether the loss plateaued, the
    final training loss, the wall time of the run and its training seconds per Adam step."""
    rows = []
    for (d, label), runs in enhanced.items():
        for draw, r in enumerate(_runs(runs)):
            c = r["correct"][r["stopped"]][d]
            share = metrics.collapse_share(r["pred"][d]) if d in r.get("pred", {}) else math.nan
            rows.append({"data set": d, "arm": label, "draw": draw, "acc %": 100 * c.mean(), "base %": 100 * base[d].mean(),
                         "trivial %": 100 * trivial[d], "p (acc > trivial)": competence_p(d, c) if competence_p else math.nan,
                         "collapse share": share,
                         "collapse": bool(base_pred is not None and d in r.get("pred", {})
                                          and metrics.collapsed(r["pred"][d], base_pred[d])),
                         "epochs": r["stopped"], "steps": r.get("steps", math.nan), "plateau": r.get("plateau", False),
                         "final loss": r["losses"][-1] if r["losses"] else math.nan, "seconds": r.get("seconds", math.nan),
                         "s per step": (r.get("seconds", math.nan) - r.get("eval_seconds", 0.0)) / max(r.get("steps", 1), 1)})
    return pd.DataFrame(rows)


def claims(*, datasets: Sequence[str], competent: Sequence[str], trained: Sequence[str], sigma: float,
           sigmas: Sequence[float], halves: pd.DataFrame, cross: pd.DataFrame, kn_halves: pd.DataFrame,
           var_shares: dict[str, float], erased: dict, enhanced: dict, epochs: Sequence[int],
           base: dict[str, np.ndarray], trivial: dict[str, float], base_pred: dict[str, np.ndarray] | None = None,
           n_resamples: int = 1000, seed: int = 0, notes: dict | None = None, figures: dict | None = None) -> list[Claim]:
    """CN-01 and CN-12..25 (CN-02..11 are notebooks 01, 02).

    datasets: every data set; competent: those the base model answers above the best trivial
    answer (interventions.Competence.above_chance): erase claims (an accuracy LOSS) count only
    these; enhance claims do not need base competence (fine-tuning can lift a data set from
    chance: issue 22 item 5). trained: the data sets whose masks are erased (Tab. 3).
    halves, cross: `halves_draws` of the CNL masks (sizes of Fig. 6; cross pairs of Fig. 4);
    kn_halves: `halves_draws` of KN's. var_shares: {data set: % of neurons in the sigma-mask
    under Eq. 8 as written (variance)}. erased: {data set: `erase_run` output} (the erased
    data sets only); enhanced: {(data set, "Located" | "W/o located"): `finetune` output,
    (data set, "Random"): [one `finetune` output per random draw]}. base: {data set: the base
    model's 1/0 per evaluation question}; trivial: {data set: the best trivial answer's
    accuracy (fraction)}; base_pred: {data set: the base model's answers} (collapse flags).
    Intervals: examples (within halves) for the masks, questions (paired, per-data-set means
    averaged; random draws a second level) for accuracies."""
    notes, figures = dict(notes or {}), figures or {}
    ci = dict(n_resamples=n_resamples, seed=seed)
    out = []

    def add(id, est, **kw):
        out.append(measured(id, est, note=notes.get(id, ""), figure=figures.get(id), **kw))

    def nothing(id, reason):
        out.append(na(id, reason))

    n_ex = int(halves[halves.draw == 0].groupby("data")["size"].max().sum())
    levels = level_draws(halves)

    def from_draws(id, values, n):  # a mask claim; an empty mask in a half leaves its overlap undefined
        if np.isfinite(float(values.loc[0])):
            add(id, draws_estimate(values, n, "examples"))
        else:
            nothing(id, f"a sigma-{sigma:g} mask (or KN's set) is empty in a half of the examples: the overlap is undefined")
    if "gsm8k" in levels:
        from_draws("CN-01", levels["gsm8k"], int(halves.query("draw == 0 and data == 'gsm8k'")["size"].max()))
    else:
        nothing("CN-01", "GSM8K is not among the data sets at this scale")
    if levels.loc[0].notna().all():
        from_draws("CN-12", levels.min(axis=1), n_ex)
    else:
        nothing("CN-12", f"a sigma-{sigma:g} mask is empty in a half of the examples: the overlap is undefined")
    nothing("CN-13", "Llama2-13B and GPT-J-6B: the embedded model is SmolLM2-135M only (BIG)")
    shares = np.array([var_shares[d] for d in datasets])
    add("CN-14", Estimate.of(metrics.unit_mean_ci(shares, **ci), len(shares), "data sets"))

    # enhance: rows = evaluation questions of the fine-tuned data sets, concatenated; no competence needed
    fine = [d for d in trained if all((d, a) in enhanced for a in ARMS)]
    last = max(epochs)

    def arms_note(ds, epoch):
        parts = []
        for d in ds:
            acc = {a: 100 * np.mean(_arm(enhanced[d, a], "correct", epoch, d)) for a in ARMS}
            stops = {a: [r["stopped"] for r in _runs(enhanced[d, a])] for a in ARMS}
            parts.append(f"{d} at epoch {epoch}: " + ", ".join(f"{a} {fmt(v)} %" for a, v in acc.items())
                         + f" (base {fmt(100 * base[d].mean())} %, best trivial answer {fmt(100 * trivial[d])} %; "
                         + "epochs run " + ", ".join(f"{a} {'/'.join(map(str, v))}" for a, v in stops.items()) + ")")
        return "; ".join(parts)

    def collapse_flags(ds):
        if base_pred is None:
            return []
        hit = any(metrics.collapsed(r["pred"][d], base_pred[d]) for d in ds for a in ARMS for r in _runs(enhanced[d, a])
                  if d in r.get("pred", {}))
        return ["collapse"] if hit else []

    if fine:
        codes = np.concatenate([np.full(len(base[d]), i) for i, d in enumerate(fine)])

        def cat(label, epoch):
            return np.concatenate([_arm(enhanced[d, label], "correct", epoch, d) for d in fine], axis=-1)
        conds = [cat(label, e) for e in epochs for label in ARMS]

        def min_margin(*xs):
            c = xs[-1]
            return min(100 * (_per_data(xs[3 * i], c) - max(_per_data(xs[3 * i + 1], c), _per_data(xs[3 * i + 2], c)))
                       for i in range(len(epochs)))
        notes.setdefault("CN-15", arms_note(fine, last))
        add("CN-15", Estimate.of(metrics.bootstrap_ci(min_margin, *conds, codes, **ci), len(codes), "questions"),
            flags=collapse_flags(fine))
        e1 = min(epochs)
        notes.setdefault("CN-16", arms_note(fine, e1))
        add("CN-16", Estimate.of(metrics.bootstrap_ci(lambda l, w, c: 100 * (_per_data(l, c) - _per_data(w, c)),
                                                      cat("Located", e1), cat("W/o located", e1), codes, **ci),
                                 len(codes), "questions"), flags=["paper inconsistent", *collapse_flags(fine)])
        if "emotion" in fine:
            l, w = (_arm(enhanced["emotion", k], "correct", last, "emotion") for k in ("Located", "W/o located"))
            notes.setdefault("CN-17", arms_note(["emotion"], last))
            add("CN-17", Estimate.of(metrics.diff_ci(100 * l, 100 * w, **ci), len(l), "questions"),
                flags=collapse_flags(["emotion"]))
        else:
            nothing("CN-17", "emotion is not fine-tuned at this scale")
        # App. G: accuracy on the data sets a model was not trained on (every evaluated one)
        groups = [(d, t) for d in fine for t in datasets if t != d and t in enhanced[d, "Located"]["correct"][last]]
        if groups:
            qid = {t: np.arange(len(base[t])) + 10_000 * i for i, t in enumerate(datasets)}
            units = np.concatenate([qid[t] for _, t in groups])
            gcodes = np.concatenate([np.full(len(qid[t]), i) for i, (_, t) in enumerate(groups)])
            xs = [np.concatenate([_arm(enhanced[d, label], "correct", last, t) for d, t in groups], axis=-1) for label in ARMS]

            def unseen(l, r, w, c):
                return 100 * (_per_data(l, c) - max(_per_data(r, c), _per_data(w, c)))
            notes.setdefault("CN-24", "unseen data sets (fine-tuned on -> tested): " + ", ".join(f"{d} -> {t}" for d, t in groups))
            add("CN-24", Estimate.of(metrics.bootstrap_ci(unseen, *xs, gcodes, units=units, **ci), len(set(units)), "questions"))
        else:
            nothing("CN-24", "no evaluated data set besides the fine-tuned ones: nothing unseen to test on")
    else:
        for id in ("CN-15", "CN-16", "CN-17", "CN-24"):
            nothing(id, "no data set is fine-tuned at this scale (or no sigma-6 neuron was located on one)")

    # erase: an accuracy loss needs a base model that beats the best trivial answer
    era = [d for d in trained if d in competent and d in erased]
    no_task = ("the base model does not beat the best trivial answer on any of the erased data sets "
               f"({', '.join(trained)}): the precondition of an accuracy loss is refuted")
    if era:
        codes = np.concatenate([np.full(len(erased[d]["base"]), i) for i, d in enumerate(era)])
        xs = []
        for s in sigmas:
            xs.append(np.concatenate([erased[d][f"located {s:g}"] for d in era]))
            xs.append(np.concatenate([np.mean(erased[d][f"random {s:g}"], axis=0) for d in era]))

        def gaps(*x):
            c = x[-1]
            return [100 * (_per_data(x[2 * i], c) - _per_data(x[2 * i + 1], c)) for i in range(len(sigmas))]
        notes.setdefault("CN-18", f"erased data sets the base model is competent on: {', '.join(era)}")
        add("CN-18", Estimate.of(metrics.bootstrap_ci(lambda *x: max(gaps(*x)), *xs, codes, **ci), len(codes), "questions"))
        if len(sigmas) >= 2:
            logs = np.log2(np.asarray(sigmas, dtype=float))
            add("CN-19", Estimate.of(metrics.bootstrap_ci(lambda *x: np.polyfit(logs, gaps(*x), 1)[0], *xs, codes, **ci),
                                     len(codes), "questions"))
        else:
            nothing("CN-19", "one sigma at this scale: no trend to measure")
    else:
        nothing("CN-18", no_task)
        nothing("CN-19", no_task)

    if {"gsm8k", "emotion", "code"} <= set(datasets) and len(cross):
        from_draws("CN-20", normalised_iou_draws(halves, cross), n_ex)
    else:
        nothing("CN-20", "needs gsm8k, emotion and code at this scale")

    slopes = slope_draws(halves)
    if np.isfinite(slopes.loc[0]):
        add("CN-22", draws_estimate(slopes, n_ex, "examples"))
    else:
        nothing("CN-22", "fewer than two data sizes with a non-empty mask in both halves at this scale: no slope")

    # CN-21: GSM8K's neurons, related (Meta_Math) vs unrelated data sets. Enhance needs no base competence;
    # the erase part counts only where the base model beats the best trivial answer on Meta_Math and on an unrelated set
    gsm = enhanced.get(("gsm8k", "Located"))
    if "metamath" not in datasets or "gsm8k" not in datasets:
        nothing("CN-21", "needs GSM8K and Meta_Math among the data sets at this scale")
    elif gsm is None:
        nothing("CN-21", "GSM8K's Located arm is not fine-tuned at this scale (`scales.CNL.transfer`: off at SCALE=default, "
                         "where the run takes notebook 03 past its 40 minutes on 2 cores; SCALE=paper runs it)")
    else:
        tested = ["metamath", *[t for t in datasets if t not in ("gsm8k", "metamath") and t in gsm["correct"][last]]]
        codes = np.concatenate([np.full(len(base[t]), i) for i, t in enumerate(tested)])
        enh = np.concatenate([gsm["correct"][last][t] for t in tested])
        b0 = np.concatenate([base[t] for t in tested])

        def related(e, b, c):  # Meta_Math change minus the mean change on the unrelated data sets
            dm = [e[c == i].mean() - b[c == i].mean() for i in range(len(tested))]
            return 100 * (dm[0] - np.mean(dm[1:]))
        erase_ok = "metamath" in competent and "metamath" in erased and "of gsm8k" in erased["metamath"]
        # the erase part's unrelated data sets: every competent erased one (whether or not the enhance run read it)
        unrel = [t for t in datasets if t not in ("gsm8k", "metamath") and t in competent and t in erased and "of gsm8k" in erased[t]]
        if len(tested) < 2:
            nothing("CN-21", "no data set besides GSM8K and Meta_Math is evaluated: nothing unrelated to compare with")
        elif erase_ok and unrel:
            t2 = ["metamath", *unrel]
            ers = np.concatenate([erased[t]["of gsm8k"] for t in t2])
            codes2 = np.concatenate([np.full(len(erased[t]["base"]), i) for i, t in enumerate(t2)])  # erase questions

            def unrelated_loss(r, b, c):  # mean change on the unrelated data sets minus Meta_Math's change
                dm = [r[c == i].mean() - b[c == i].mean() for i in range(len(t2))]
                return 100 * (np.mean(dm[1:]) - dm[0])
            est = Estimate.of(metrics.bootstrap_ci(related, enh, b0, codes, **ci), len(codes), "questions")
            ers_est = Estimate.of(metrics.bootstrap_ci(unrelated_loss, ers, np.concatenate([erased[t]["base"] for t in t2]), codes2, **ci),
                                  len(codes2), "questions")
            notes.setdefault("CN-21", f"the smaller of the enhance part ({fmt(est.value)}; unrelated: {', '.join(tested[1:])}) "
                                      f"and the erase part ({fmt(ers_est.value)}; unrelated: {', '.join(unrel)})")
            add("CN-21", Estimate(min(est.value, ers_est.value), min(est.lo, ers_est.lo), min(est.hi, ers_est.hi),
                                  n=len(codes), n_of="questions"))
        else:
            notes.setdefault("CN-21", "enhance part only: the base model does not beat the best trivial answer on Meta_Math "
                                      "(or on any unrelated data set), so the erase part (an accuracy loss) is not measurable; "
                                      f"unrelated: {', '.join(tested[1:])}")
            add("CN-21", Estimate.of(metrics.bootstrap_ci(related, enh, b0, codes, **ci), len(codes), "questions"))
    nothing("CN-23", "a second model (App. F: Llama2-13B / GPT-J) is not available here (BIG)")

    # CN-25: CNL - KN, halves overlap (examples) and IPP (questions, random draws as seeds)
    cnl_ov = halves[halves["size"] == halves.groupby("data")["size"].transform("max")].groupby("draw")["overlap"].mean()
    kn_ov = kn_halves[kn_halves["size"] == kn_halves.groupby("data")["size"].transform("max")].groupby("draw")["overlap"].mean()
    gap = 100 * (cnl_ov - kn_ov)
    if not np.isfinite(float(gap.loc[0])):
        nothing("CN-25", f"a sigma-{sigma:g} mask or KN's set is empty in a half of the examples: the overlap part is undefined")
    elif era:
        ov = draws_estimate(gap, n_ex, "examples")
        codes = np.concatenate([np.full(len(erased[d]["base"]), i) for i, d in enumerate(era)])
        loc = np.concatenate([erased[d][f"located {sigma:g}"] for d in era])
        rnd = np.concatenate([np.asarray(erased[d][f"random {sigma:g}"]) for d in era], axis=1)
        kn = np.concatenate([erased[d]["kn"] for d in era])
        knr = np.concatenate([np.asarray(erased[d]["kn random"]) for d in era], axis=1)

        def ipp_gap(l, r, k, kr, c):  # IPP = min over draws of random accuracy - located accuracy, per data set
            def ipp_of(x, xr):
                return np.mean([min(xr[j][c == i].mean() for j in range(len(xr))) - x[c == i].mean() for i in np.unique(c)])
            return 100 * (ipp_of(l, r) - ipp_of(k, kr))
        ipp_est = Estimate.of(metrics.bootstrap_ci(ipp_gap, loc, rnd, kn, knr, codes, **ci), len(codes), "questions")
        both = [e for e in (ov, ipp_est) if e.has_interval]
        if len(both) == 2:
            est = Estimate(min(ov.value, ipp_est.value), min(ov.lo, ipp_est.lo), min(ov.hi, ipp_est.hi),
                           n=len(codes), n_of="questions (IPP); examples (overlap)")
        else:
            est = Estimate(min(ov.value, ipp_est.value), n=len(codes), n_of="questions (IPP); examples (overlap)")
        add("CN-25", est)
    else:
        nothing("CN-25", no_task + " (IPP is an accuracy change)")
    order = {f"CN-{i:02d}": i for i in range(1, 26)}
    return sorted(out, key=lambda c: order[c.id])
