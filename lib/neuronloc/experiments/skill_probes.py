"""Notebook 05: NEG §5-§6, skill-neuron probes on MCEval8K.

  split          one task's train / valid / test questions, train and valid free of test records
  shots          the questions as few-shot prompts (one demonstration per option, §5.4)
  probe_options  the constructor kwargs of every probe (neuron counts, seed)
  correct        per test question, right or wrong, of one probe over the tasks of a setting
  as_it1         a PAWS question in App. J's IT1 form (options listed, answer 'a' / 'b')
  task_table     the per-task accuracy table of one setting
  ordering       share of tasks where Tree >= Magn >= LM-Prob >= Rand (NG-18, NG-19)
  above_chance   per task, one-sided binomial test of a probe's accuracy against chance
  pooled_test    the same over all test questions of a setting pooled

The notebook keeps `features[task, setting]` = {"train", "valid", "test": `probes.ProbeData`}
(task "mceval8k/<name>", setting "zero-shot" or "few-shot") and `results`, a DataFrame with
one row per (task, setting, probe): columns "task" (the name without "mceval8k/"),
"setting", "probe", "acc" (test accuracy) and "chance".
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .. import metrics, probes
from ..report import number
from ..tasks import few_shot
from ..tasks.core import MCQuestion
from ..tasks.loaders import load_task

Features = Mapping[tuple[str, str], Mapping[str, probes.ProbeData]]  # (task, setting) -> {split: features}

# NEG App. J: PAWS's second instruction ("IT1"), the options listed and answered by letter
IT1 = "Given two sentences, determine if they are paraphrases of each other."


def split(name: str, n_train: int, n_valid: int, n_test: int,
          seed: int = 0) -> tuple[dict[str, list[MCQuestion]], list[MCQuestion], int]:
    """Task `name`'s questions: test = the first `n_test` of test (seeded order); train and valid
    = the first `n_train` and the next `n_valid` of the train records that are not test records
    (`probes.dedup`: MCEval8K's train repeats test for 8 tasks, and its valid is test for 10).

    Returns ({"train", "valid", "test": questions}, the demonstration pool without test records,
    the number of train records dropped because they are test records)."""
    test = load_task(name, "test", n=n_test, seed=seed)
    pool = load_task(name, "train", seed=seed)  # every train record, seeded order
    every_test = load_task(name, "test", seed=seed).questions
    clean = probes.dedup(pool.questions, every_test)  # train records that are not test records
    train = clean[:n_train]
    valid = clean[n_train:n_train + n_valid]
    demos = probes.dedup(pool.demonstrations, every_test)  # a demonstration is never a test record
    return {"train": train, "valid": valid, "test": test.questions}, demos, len(pool) - len(clean)


def shots(questions: Sequence[MCQuestion], demos: Sequence[MCQuestion], seed: int = 0) -> list[MCQuestion]:
    """Each question with one demonstration per option from `demos` (`tasks.few_shot`, NEG §5.4)."""
    return [few_shot(q, demos, seed=seed) for q in questions]


def probe_options(sizes: Sequence[int], seed: int = 0) -> dict[str, dict]:
    """Constructor kwargs per probe name (`probes.PROBES`): the vote probes choose their neuron
    count from `sizes` on valid; Rand's draws and Tree-Probe's forest are seeded; LM-Prob takes none."""
    return {"rand": {"seed": seed}, "tree": {"seed": seed}, "magn": {"sizes": sizes}, "polar": {"sizes": sizes},
            "act": {"sizes": sizes}}


def correct(features: Features, probe: str, options: Mapping[str, dict], setting: str = "zero-shot") -> np.ndarray:
    """Probe `probe` (a `probes.PROBES` name, built with `options[probe]`) fitted on each task's
    train (neuron count on valid): 1.0 where it answers a test question right, else 0.0, over
    the test questions of every task of `setting` in the order of `features`, `[question]`."""
    out = []
    for (_, s), f in features.items():
        if s != setting:
            continue
        p = probes.PROBES[probe](**options.get(probe, {})).fit(f["train"], f["valid"])
        out.append((p.predict(f["test"]) == f["test"].answers).double())
    return torch.cat(out).numpy()


def as_it1(question: MCQuestion) -> MCQuestion:
    """A PAWS question (and its demonstrations) in App. J's IT1 form: the options
    "not paraphrase" / "paraphrase" listed and answered by the letters 'a' / 'b', the IT1
    instruction once, on the question (demonstrations carry none)."""
    def one(x: MCQuestion) -> MCQuestion:
        return replace(x, stem=x.stem.removesuffix("\nAnswer:"), options=("not paraphrase", "paraphrase"), labels=("a", "b"),
                       style="mc", readout="letter", instruction="" if x is not question else IT1,
                       demonstration=None if x.demonstration is None else one(x.demonstration))
    return one(question)


def task_table(table: pd.DataFrame, setting: str) -> pd.DataFrame | None:
    """The rows of `setting` of the accuracy table indexed by (setting, task), indexed by task
    (columns: probes); None when the setting was not run."""
    return table.loc[setting] if setting in table.index.get_level_values(0) else None


def ordering(table: pd.DataFrame) -> float:
    """Share of tasks (rows of `table`, columns "tree", "magn", "lm_prob", "rand": accuracies)
    where Tree >= Magn >= LM-Prob >= Rand (NEG §5.5's order of the probes)."""
    return float(((table["tree"] >= table["magn"]) & (table["magn"] >= table["lm_prob"])
                  & (table["lm_prob"] >= table["rand"])).mean())


def _rows(results: pd.DataFrame, features: Features, probe: str, setting: str | None) -> tuple[pd.DataFrame, list[int]]:
    """`probe`'s rows of `results` (of `setting`; None: every setting) and their test counts."""
    keep = results.probe == probe
    if setting is not None:
        keep &= results.setting == setting
    rows = results[keep]
    return rows, [len(features[f"mceval8k/{t}", s]["test"]) for t, s in zip(rows.task, rows.setting)]


def above_chance(results: pd.DataFrame, features: Features, probe: str, setting: str = "zero-shot",
                 alpha: float = 0.05) -> dict[str, bool]:
    """Per task of `setting`: is `probe`'s test accuracy above chance, one-sided binomial test
    (hits of n test questions against p = chance) with p-value < alpha?"""
    rows, n = _rows(results, features, probe, setting)
    return {r.task: stats.binomtest(int(round(r.acc * k)), k, r.chance, alternative="greater").pvalue < alpha
            for r, k in zip(rows.itertuples(), n)}


class PooledTest(NamedTuple):
    """A probe's hits over `total` test questions pooled over tasks, the pooled chance (the
    tasks' chance weighted by their question counts) and the one-sided binomial p-value."""
    hits: int
    total: int
    chance: float
    p: float


def pooled_test(results: pd.DataFrame, features: Features, probe: str, setting: str | None = "zero-shot") -> PooledTest:
    """One-sided binomial test of `probe` over all test questions of `setting` (None: of every
    setting) pooled, against the pooled chance."""
    rows, n = _rows(results, features, probe, setting)
    hits = int(round(sum(a * k for a, k in zip(rows.acc, n))))
    chance = float(np.average(rows.chance, weights=n))
    return PooledTest(hits, sum(n), chance, stats.binomtest(hits, sum(n), chance, alternative="greater").pvalue)


# ---------------------------------------------------------------- claims (NG-15 ... NG-29, NG-34)

def hits(probe, data: probes.ProbeData, neurons=None) -> np.ndarray:
    """1.0 where a fitted `probe` (or its vote over `neurons`) answers a question of `data` right, `[question]`."""
    pred = probe.predict(data) if neurons is None else probe.predict_with(data, neurons)
    return (pred == data.answers).double().numpy()


def window_hits(magn, data: probes.ProbeData, width: int, last: float = 0.1) -> np.ndarray:
    """Per question of `data`, the share of the last `last` of the `width`-neuron windows down a
    fitted Magn-Probe's ranking that answer it right (NEG §6.3), `[question]`."""
    starts = list(range(0, len(magn.ranking) - width + 1, width))
    tail = starts[int(len(starts) * (1 - last)):] or starts[-1:]
    return np.mean([hits(magn, data, magn.ranking[s:s + width]) for s in tail], axis=0)


def baseline(questions: Sequence[MCQuestion]) -> float:
    """What a probe must beat: the larger of chance (mean 1/k) and the best constant answer."""
    from ..interventions import trivial_accuracy

    return max(float(np.mean([1 / len(q.options) for q in questions])), trivial_accuracy(questions))


FACTUAL = ("myriadlama", "commensenseqa", "mlama", "templama")  # NEG §6.1: the factual tasks (Tab. 4)


def _ordering_min(tree, magn, lm, base):
    return min(np.mean(tree) - np.mean(magn), np.mean(magn) - np.mean(lm), np.mean(lm) - base)


def claims(res: dict, cfg, n_resamples: int = 1000, seed: int = 0, figures: str | None = None) -> list:
    """The claims.json rows of notebook 05 from `res` (intervals over test questions, paired
    where probes answer the same questions):

      tasks: the competent tasks the probes ran on (names without "mceval8k/"); readout: their read-out;
      correct {probe: `[question]` 0/1}, zero-shot test questions of those tasks, probes "rand",
        "lm_prob", "polar", "magn", "tree", "act"; baseline: max(chance, best constant answer);
      letter: `[question]` LM-Prob under the letter read-out (or None); leak: PooledTest of the
        label-shuffled Tree-Probe;
      few: {probe: `[question]`} few-shot (or None), few_baseline;
      zero_abs, few_abs: `[question]` mean |NEG| of the same questions zero- / few-shot (or None);
      paws: {"opposite", "moving": `[question]` counts, "r"} (or None);
      train_curve {n: `[question]`}; at_k, at_max `[question]` (Magn at the valid-chosen count and
        at the largest), k, k_max; last_windows `[question]`; optimal_sizes, optimal_depths {task: int};
      composition: the rows of `mceval8k_composition`.
    """
    from pathlib import Path

    from ..claims import Estimate, measured, na

    fig = (lambda name: Path(figures) / f"{name}.png") if figures else (lambda name: None)
    kw = {"n_resamples": n_resamples, "seed": seed}
    c, base = res["correct"], res["baseline"]
    n = len(c["magn"])
    on = f"{', '.join(res['tasks'])} (read-out {res['readout']}; the tasks the model is competent at against the best constant answer)"
    q = lambda triple, m=n: Estimate.of(triple, m, "questions")
    mean = lambda x: float(np.mean(x))
    out = []

    # NG-15: LM-Prob against the baseline; the letter read-out as a labelled figure in the note
    letter = res.get("letter")
    letter_note = (f"; letter read-out (the paper's): {number(mean(letter))} against baseline {number(base)}" if letter is not None else "")
    out.append(measured("NG-15", q(metrics.bootstrap_ci(lambda x: np.mean(x) - base, c["lm_prob"], **kw)),
                        note=f"LM-Prob {number(mean(c['lm_prob']))}, baseline {number(base)}, on {on}{letter_note}"))
    # NG-16, NG-17: paired differences
    out.append(measured("NG-16", q(metrics.diff_ci(c["magn"], c["lm_prob"], **kw)),
                        note=f"Magn {number(mean(c['magn']))}, LM-Prob {number(mean(c['lm_prob']))} on {on}; the per-task "
                             f"'wins on >= 90 % of tasks' half needs more competent tasks than {len(res['tasks'])}"))
    leak = res.get("leak")
    leak_note = (f"; label-shuffled Tree-Probe {number(leak.hits / leak.total)} vs chance {number(leak.chance)} (p {number(leak.p)}: "
                 f"{'no leakage' if leak.p > 0.05 else 'ABOVE CHANCE: leakage'})" if leak is not None else "")
    out.append(measured("NG-17", q(metrics.diff_ci(c["tree"], c["magn"], **kw)),
                        note=f"Tree {number(mean(c['tree']))}, Magn {number(mean(c['magn']))} on {on}{leak_note}"))
    # NG-18, NG-19: the order Tree >= Magn >= LM >= baseline, its smallest step
    out.append(measured("NG-18", q(metrics.bootstrap_ci(lambda t, m, l: _ordering_min(t, m, l, base),
                                                         c["tree"], c["magn"], c["lm_prob"], **kw)),
                        note=f"Tree {number(mean(c['tree']))} ≥ Magn {number(mean(c['magn']))} ≥ LM-Prob {number(mean(c['lm_prob']))} "
                             f"≥ baseline {number(base)} on {on}; the paper's claim is about most of 22 tasks"))
    few = res.get("few")
    if few is not None:
        fb = res["few_baseline"]
        out.append(measured("NG-19", q(metrics.bootstrap_ci(lambda t, m, l: _ordering_min(t, m, l, fb),
                                                             few["tree"], few["magn"], few["lm_prob"], **kw), len(few["magn"])),
                            note=f"few-shot (one demonstration per option): Tree {number(mean(few['tree']))}, Magn {number(mean(few['magn']))}, "
                                 f"LM-Prob {number(mean(few['lm_prob']))}, baseline {number(fb)}; {len(few['magn'])} test questions of {on}"))
    else:
        out.append(na("NG-19", "few-shot not run at this scale"))
    # NG-20: few-shot / zero-shot mean |NEG| of the same questions
    if res.get("few_abs") is not None:
        za, fa = res["zero_abs"], res["few_abs"]
        out.append(measured("NG-20", q(metrics.bootstrap_ci(lambda z, f: np.mean(f) / np.mean(z), za, fa, **kw), len(za)),
                            note=f"{len(za)} questions of {', '.join(res['tasks'])} in both settings"))
    else:
        out.append(na("NG-20", "few-shot not run at this scale"))
    # NG-21: PAWS yes / no mirror
    paws = res.get("paws")
    if paws is not None:
        out.append(measured("NG-21", q(metrics.bootstrap_ci(lambda o, m: np.sum(o) / np.sum(m), paws["opposite"], paws["moving"], **kw),
                                       len(paws["opposite"])),
                            note=f"r(NEG 'no', NEG 'yes') = {number(paws['r'])} on {len(paws['opposite'])} PAWS questions. A gradient "
                                 "statistic, measured though the model is not competent on PAWS (nor is the paper's Llama2-7B: "
                                 "LM-Prob .5000 on PAWS, Tab. 8); near-automatic only when P(yes) + P(no) is about constant"))
    else:
        out.append(na("NG-21", "PAWS not run at this scale"))
    out.append(na("NG-22", "needs 5 LLMs (Llama3.2-3B … Llama2-70B); this run has one small model (its Magn vs LM-Prob is NG-16)"))
    # NG-23: Magn - Act on the knowledge-intensive competent tasks
    knowledge = [t for t in res["tasks"] if t in FACTUAL]
    if knowledge:
        keep = np.isin(res["task"], knowledge)
        out.append(measured("NG-23", q(metrics.diff_ci(c["magn"][keep], c["act"][keep], **kw), int(keep.sum())),
                            note=f"knowledge-intensive task(s) {', '.join(knowledge)} stand in for mLAMA / CSQA; the AGNews half "
                                 "(Act > Magn) is not measured: the model is not competent on AGNews (competence.json)"))
    else:
        out.append(na("NG-23", "no knowledge-intensive task the model is competent at"))
    # NG-24, NG-29: factual vs non-factual tasks
    factual = [t for t in res["tasks"] if t in FACTUAL]
    other = [t for t in res["tasks"] if t not in FACTUAL]
    sizes, depths = res.get("optimal_sizes", {}), res.get("optimal_depths", {})
    if factual and other:
        log_k = lambda ts, d: float(np.mean([np.log2(d[t]) for t in ts]))
        out.append(measured("NG-24", Estimate(log_k(factual, sizes) - log_k(other, sizes), n=len(res["tasks"]), n_of="tasks"),
                            note="; ".join(f"{t} {sizes[t]}" for t in res["tasks"])))
        out.append(measured("NG-29", Estimate(log_k(factual, depths) - log_k(other, depths), n=len(res["tasks"]), n_of="tasks"),
                            note="; ".join(f"{t} {depths[t]}" for t in res["tasks"]), figure=fig("05_fig9_tree_grid")))
    else:
        why = (f"needs a competent factual and a competent non-factual task; the competent tasks are {', '.join(res['tasks'])} "
               f"({'all factual' if factual else 'none factual'}): the competence test refutes the precondition")
        out.append(na("NG-24", why + "; optimal Magn counts (valid): " + "; ".join(f"{t} {v}" for t, v in sizes.items())))
        out.append(na("NG-29", why + "; optimal depths: " + "; ".join(f"{t} {v}" for t, v in depths.items()),
                      figure=fig("05_fig9_tree_grid")))
    # NG-25: gain 1 -> 128 against 128 -> max training questions
    curve = res["train_curve"]
    top = max(curve)
    if 1 in curve and 128 in curve and top > 128:
        out.append(measured("NG-25", q(metrics.bootstrap_ci(lambda a, b, z: 2 * np.mean(b) - np.mean(a) - np.mean(z),
                                                             curve[1], curve[128], curve[top], **kw)),
                            note=f"Magn accuracy with 1 / 128 / {top} training questions: {number(mean(curve[1]))} / "
                                 f"{number(mean(curve[128]))} / {number(mean(curve[top]))} (one nested draw of training questions)",
                            figure=fig("05_fig7_training_curve")))
    else:
        out.append(na("NG-25", f"needs more than 128 training questions; this scale has {top}"))
    # NG-26: accuracy at the valid-chosen count against the largest count, on test
    out.append(measured("NG-26", q(metrics.diff_ci(res["at_k"], res["at_max"], **kw)), figure=fig("05_fig16_neuron_curves"),
                        note=f"count chosen on valid: {res['k']}; largest: {res['k_max']}; test accuracy {number(mean(res['at_k']))} "
                             f"vs {number(mean(res['at_max']))} on {on}"))
    # NG-28: the last windows against the baseline
    out.append(measured("NG-28", q(metrics.bootstrap_ci(lambda w: np.mean(w) - base, res["last_windows"], **kw)),
                        figure=fig("05_fig8_windows"),
                        note=f"last 10 % of the {cfg.window}-neuron windows of the Magn ranking: accuracy {number(mean(res['last_windows']))}, "
                             f"baseline {number(base)}"))
    out.append(na("NG-27", "robustness across PAWS contexts is defined only where each context's own skill neurons beat chance "
                           "(NEG §6.2's ratio divides by that gain); the model is not competent on PAWS under any read-out "
                           "(competence.json: at most 0.45 against 0.56 for the best constant answer), so the precondition fails"))
    # NG-34: the mirror's MCEval8K against the paper's composition
    comp = res["composition"]
    paper_test = lambda t: 529 if t == "stereoset" else 1000  # App. F: 6:1:1 of 8,000, Stereoset 4,230
    ok = [r["task"] for r in comp if r["test"] == paper_test(r["task"])
          and (r["options"] <= 0 or r["largest answer share"] <= 1.5 / r["options"])]
    off = [r["task"] for r in comp if r["task"] not in ok]
    out.append(measured("NG-34", Estimate(float(len(ok)), n=len(comp), n_of="tasks"),
                        note=f"{len(comp)} tasks in {len({r['genre'] for r in comp})} genres; off the paper's composition: "
                             f"{', '.join(off) or 'none'}; train missing in the mirror for "
                             f"{', '.join(r['task'] for r in comp if r['train'] == 0) or 'none'} (a mirror gap, not the paper's)"))
    order = {c.id: c for c in out}
    return [order[i] for i in sorted(order)]

