"""Write notebooks/07_cross_method.ipynb from the cells below (run once; the notebook is the source after)."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# 07 · Every localizer of the three papers under one protocol

None of the three papers compares its localizer with the other papers' on one model and one task set. Here every method runs on the same questions, with the same budget and the same intervention, and is scored the same way:

| method | paper | scores | set |
| --- | --- | --- | --- |
| `ace` | NeuronLLM | IG of the option probability | good + bad (additive reordering) |
| `tn`, `qrnca` | NeuronLLM's baselines | IG of the margin / of P(answer) | good + bad (additive reordering, "enabled") |
| `kn` | CNL's baseline (Dai et al.) | IG of P(answer) | count-based good set |
| `cnl` | CNL | IG at every answer token (Eq. 7) of the gold continuation | top-K by score (the σ-mask's ranking) |
| `neurgrad` | NEG | empirical gradient of P(answer) | most positive / most negative |
| `act` | ACT baseline | mean activation | top-K |
| `random` | — | seeded random | K random, several seeds |

Causal tracing (CNL's second baseline) localizes hidden *states* per layer and token, not neurons: a K-neuron set does not exist for it, so it is not in this comparison (notebook 01 tests it on facts).

**Protocol.** Per task: the first `n_competence` test questions choose the read-out (`choose_readout`: letter if the model is above chance with it, else the best above-chance read-out; the numbers come from `results/<slug>/competence.json` when it was made on the same questions); the next two blocks of `n_ident` questions are two disjoint identification sets A and B; the rest is the evaluation set. One question per example (no QATT proxies: under the cloze read-outs the prompt does not list the options, so proxies are the same question and Com = Acc). Every method locates on A (and on B for stability) with budget K; then, on the evaluation set, **Deg** silences its top-K good neurons and **Enh** doubles them (NeuronLLM §3.5), and, for the methods with a bad set, **Deg±/Enh±** use K/2 good + K/2 bad (degrader / enhancer) — one fixed ratio, declared here, not picked on the evaluation data. The change is the signed RAC (%) with a paired bootstrap 95 % interval over questions (`metrics.change_ci`).

A change is only meaningful where the model can do the task: tasks where no read-out is above chance are still run (their overlap, stability and cost are valid) but their RAC is shown greyed and not used in the conclusions."""),
code("""MODEL = "smollm2-135m"
SCALE = "smoke"
SEED = 0
RESULTS_DIR = "../results/smoke/smollm2-135m/07_cross_method"
FIGURES_DIR = "../figures/smoke/smollm2-135m\"""", metadata={"tags": ["parameters"]}),
code("""import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")

import numpy as np
import pandas as pd
import torch
import transformers

import neuronloc
from neuronloc import plots, scales
from neuronloc.hooks import count_passes, excite, silence
from neuronloc.interventions import Competence, choose_readout, degrader, enhancer, evaluate_conditions, pick_readout
from neuronloc.localization import locate
from neuronloc.metrics import change_ci, iou
from neuronloc.neurons import to_layer_dict
from neuronloc.report import rounded
from neuronloc.store import Store, key
from neuronloc.tasks import READOUTS, render
from neuronloc.tasks.loaders import Example, load_task

scale = scales.get(SCALE)
cross = scale.cross
torch.manual_seed(SEED)
plots.style()
pd.set_option("display.float_format", "{:g}".format)
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
results_dir, figures_dir = Path(RESULTS_DIR), Path(FIGURES_DIR)
results_dir.mkdir(parents=True, exist_ok=True)
t_start = time.perf_counter()
print(f"SCALE={scale.name}: {len(cross.tasks)} tasks, {cross.n_ident} identification questions x 2 sets, "
      f"{cross.n_eval} evaluation questions per task, K = {cross.k}, {cross.random_seeds} random seeds")"""),
code("""lm = neuronloc.load_model(MODEL)
site = lm.site()
store = Store.for_model(results_dir.parent.parent, lm.slug)  # results/<slug>/cache: a re-run resumes
print(f"{lm.name}: {site.n_neurons} neurons; cache {store.root.name}/")"""),
md("""## 1. Questions and read-outs

The committed competence table (`scripts/competence.py`) measured every read-out on the first 100 test questions of each task with seed 0; where it matches (`n_competence`, seed, model) it is reused, else the competence is measured here on the same first `n_competence` questions. Those questions are never used below."""),
code("""def load_competence():
    \"\"\"The competence table of this model: next to this run's results, else the committed one.\"\"\"
    paths = [results_dir.parent / "competence.json", Path("../results") / lm.slug / "competence.json"]
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if data.get("n") != cross.n_competence or data.get("seed") != SEED or data.get("model") != MODEL:
        return {}
    return {(r["task"], r["readout"]): r for r in data["rows"]}


stored = load_competence()
tasks, competence_rows = {}, []
for name in cross.tasks:
    task = load_task(name, split="test", n=cross.n_competence + 2 * cross.n_ident + cross.n_eval, seed=SEED)
    demo = task.demonstrations[0] if task.demonstrations else None  # one-shot, as QATT and competence.py
    qs = [replace(q, demonstration=demo) if demo is not None else q for q in task.questions]
    comp, rest = qs[:cross.n_competence], qs[cross.n_competence:]
    if all((name, r) in stored for r in READOUTS):
        comps = {r: Competence(**{f: v for f, v in stored[(name, r)].items() if f not in ("task", "acc")})
                 for r in READOUTS}
        readout = pick_readout(comps)  # choose_readout's rule on the stored competences
    else:
        readout, comps = choose_readout(lm, comp)
    accs = {r: c.acc for r, c in comps.items()}
    p_best = min(c.p_value for c in comps.values())
    competent = readout is not None
    readout = readout or "letter"  # at chance under every read-out: run with the papers' read-out, flag it
    a, b, ev = (rest[:cross.n_ident], rest[cross.n_ident:2 * cross.n_ident], rest[2 * cross.n_ident:])
    tasks[name] = dict(A=[replace(q, readout=readout) for q in a], B=[replace(q, readout=readout) for q in b],
                       eval=[replace(q, readout=readout) for q in ev], readout=readout, competent=competent)
    competence_rows.append({"task": name, **{f"acc {r}": accs[r] for r in accs}, "read-out": readout,
                            "above chance": competent, "min p": p_best})
competence = pd.DataFrame(competence_rows).set_index("task")
competence.to_csv(results_dir / "competence.csv")
rounded(competence)"""),
md("""## 2. Localize with every method

Each (task, method, identification set) is located once and cached whole with its cost: wall seconds and the model's forward and backward passes (`hooks.count_passes`; a batched pass counts once) per question. `cnl` reads the gold continuation of the task's read-out (the option text, or the letter) as a free-form answer and ranks neurons by its Eq. 7 score; `kn` and `qrnca` score with the same IG target but are timed separately (no shared cache)."""),
code("""def as_examples(questions):
    \"\"\"CNL takes (prompt, answer): the prompt of the question's read-out, the gold continuation.\"\"\"
    out = []
    for q in questions:
        gold = q.labels[q.answer] if q.readout == "letter" else q.options[q.answer]
        out.append(Example(render(q, lm.tokenizer, readout=q.readout), gold, q.uid))
    return out


def run_locate(method, questions, seed=0):
    data = as_examples(questions) if method == "cnl" else questions
    t = time.perf_counter()
    with count_passes(lm.model) as passes:
        found = locate(lm, data, method, k=cross.k, seed=seed, steps=cross.ig_steps, progress=False)
    seconds = time.perf_counter() - t
    n = len(questions) if method != "random" else 1
    return {"good": found.good[:cross.k], "bad": found.bad[:cross.k], "seconds": seconds / n,
            "forward": passes.forward / n, "backward": passes.backward / n}


located = {}
for name, t in tasks.items():
    for method in cross.methods:
        for part in ("A", "B"):
            seeds = range(cross.random_seeds) if method == "random" else [0]
            for seed in seeds:
                k_ = key(model=lm, notebook="07", task=name, method=method, part=part, seed=seed,
                         questions=[q.uid for q in t[part]], readout=t["readout"], k=cross.k, steps=cross.ig_steps)
                located[name, method, part, seed] = store.cached(k_, lambda: run_locate(method, t[part], seed))
print(f"{len(located)} neuron sets located")"""),
md("""## 3. Cost per question

Measured on identification set A when the set was first located (later runs read it from the cache). IG-based methods cost m batched forward+backward sweeps over the layers (m = `ig_steps` of the scale: the papers' 16 (CNL 20) at SCALE=paper, 8 at default to halve the time) (the fast path restarts each row at its own layer); NeurGrad one forward and one backward; ACT one forward."""),
code("""cost = pd.DataFrame([{"method": m, "task": n, **{c: located[n, m, "A", 0][c] for c in ("seconds", "forward", "backward")}}
                     for n in tasks for m in cross.methods]).groupby("method")[["seconds", "forward", "backward"]].mean()
cost = cost.loc[list(cross.methods)]
cost.to_csv(results_dir / "cost.csv")
cost.round(1)  # seconds differ per machine: not compared by nbval""",
     metadata={"tags": ["nbval-ignore-output"]}),
md("""## 4. Do the methods find the same neurons? Are their sets stable?

Jaccard overlap (IoU) of the good sets of every pair of methods (set A), averaged over tasks; and each method's IoU between its sets from the disjoint identification sets A and B. RANDOM's stability is what chance gives (K² / N in expectation)."""),
code("""methods = [m for m in cross.methods]
jac = np.zeros((len(methods), len(methods)))
for i, m1 in enumerate(methods):
    for j, m2 in enumerate(methods):
        jac[i, j] = np.mean([iou(located[n, m1, "A", 0]["good"], located[n, m2, "A", 0]["good"]) for n in tasks])
jaccard = pd.DataFrame(jac, index=methods, columns=methods)
jaccard.to_csv(results_dir / "jaccard.csv")
def pairs(m):  # RANDOM ignores the data: its A and B sets differ only by seed, so B takes the next seed
    n = cross.random_seeds
    return [(s, (s + 1) % n) for s in range(n)] if m == "random" else [(0, 0)]


stability = pd.DataFrame({m: [np.mean([iou(located[n, m, "A", a]["good"], located[n, m, "B", b]["good"]) for a, b in pairs(m)])
                              for n in tasks] for m in methods}, index=list(tasks)).T
stability["mean"] = stability.mean(axis=1)
stability.to_csv(results_dir / "stability.csv")
print(f"chance IoU of two random {cross.k}-sets: {rounded(cross.k / (2 * site.n_neurons - cross.k))}")
rounded(stability)"""),
code("""fig = plots.overlap_heatmap(jaccard, title=f"Jaccard overlap of the top-{cross.k} good sets (mean over {len(tasks)} tasks)")
_ = plots.save(fig, "07_jaccard", figures_dir)"""),
md("""## 5. Deg and Enh at equal budget

All conditions of a task run in one batched pass per question after its prefix (`evaluate_conditions`). The signed RAC is negative when the intervention lowered accuracy: Deg should be negative, Enh positive. RANDOM is shown as the mean over its seeds, with the range of the seeds' point values."""),
code("""def conditions_for(name):
    conds = {"base": []}
    for m in methods:
        seeds = range(cross.random_seeds) if m == "random" else [0]
        for s in seeds:
            found = located[name, m, "A", s]
            good = to_layer_dict(found["good"], site.shape)
            conds[m, s, "Deg"] = silence(good)
            conds[m, s, "Enh"] = excite(good)
            if len(found["bad"]):
                half = cross.k // 2
                conds[m, s, "Deg±"] = degrader(found["good"][:half], found["bad"][:half], site)
                conds[m, s, "Enh±"] = enhancer(found["good"][:half], found["bad"][:half], site)
    return conds


rows = []
for name, t in tasks.items():
    conds = conditions_for(name)
    k_ = key(model=lm, notebook="07", task=name, eval=[q.uid for q in t["eval"]], readout=t["readout"],
             conditions=[str(c) for c in conds], sets=[located[name, m, "A", 0]["good"] for m in methods])
    correct = store.cached(k_, lambda: [r.correct for r in evaluate_conditions(lm, t["eval"], list(conds.values()),
                                                                              site, readout=t["readout"], progress=False)])
    base = correct[0]
    ids = list(range(len(base)))
    for (cond, c) in zip(list(conds)[1:], correct[1:]):
        m, s, op = cond
        v, lo, hi = change_ci(base, c, ids, "acc", n_resamples=cross.bootstrap, seed=SEED)
        rows.append(dict(task=name, competent=t["competent"], method=m, seed=s, op=op, base_acc=base.float().mean().item(),
                         acc=c.float().mean().item(), rac=v, low=lo, high=hi))
changes = pd.DataFrame(rows)
changes.to_csv(results_dir / "changes.csv", index=False)
print(f"{len(changes)} (task, method, seed, intervention) results")"""),
code("""def summary(df):
    \"\"\"Per method and intervention: RAC on competent tasks (mean), and on how many the interval excludes 0
    in the expected direction; RANDOM as the mean over seeds.\"\"\"
    out = []
    comp = df[df.competent]
    for (m, op), g in comp.groupby(["method", "op"], sort=False):
        sign = -1 if op.startswith("Deg") else 1
        by_task = g.groupby("task").agg(rac=("rac", "mean"), low=("low", "mean"), high=("high", "mean"))
        if m == "random":
            hits = int(((g.high < 0) if sign < 0 else (g.low > 0)).sum())
            n = len(g)
        else:
            hits = int(((by_task.high < 0) if sign < 0 else (by_task.low > 0)).sum())
            n = len(by_task)
        out.append(dict(method=m, op=op, rac=by_task.rac.mean(), **{"CI excl. 0, right way": f"{hits}/{n}"}))
    return pd.DataFrame(out)


table = summary(changes)
pivot = (table.pivot(index="method", columns="op", values="rac") if len(table) else pd.DataFrame(columns=["Deg", "Enh"])).reindex(methods)
pivot.to_csv(results_dir / "rac_competent_tasks.csv")
print("mean signed RAC (%) over the tasks the model can do:", ", ".join(sorted(changes[changes.competent].task.unique())))
rounded(pivot)"""),
code("""rand = changes[changes.method == "random"].groupby(["task", "op"]).rac.agg(["mean", "min", "max"])
vs = []
for (name, op), r in rand.iterrows():
    if not tasks[name]["competent"]:
        continue
    for m in methods:
        if m == "random":
            continue
        hit = changes[(changes.task == name) & (changes.method == m) & (changes.op == op)]
        if len(hit):
            h = hit.iloc[0]
            sign = -1 if op.startswith("Deg") else 1
            beyond = (h.high < r["min"]) if sign < 0 else (h.low > r["max"])
            vs.append(dict(task=name, op=op, method=m, rac=h.rac, low=h.low, high=h.high, random_mean=r["mean"],
                           beyond_every_random_seed=bool(beyond)))
versus = pd.DataFrame(vs)
versus.to_csv(results_dir / "versus_random.csv", index=False)
beats = versus.groupby("method").beyond_every_random_seed.agg(["sum", "count"]) if len(versus) else pd.DataFrame()
beats"""),
code("""shown = changes[changes.competent & changes.op.isin(["Deg", "Enh"])]
fig = plots.change_intervals(shown if len(shown) else changes[changes.op.isin(["Deg", "Enh"])], order=methods,
                             title=f"Signed RAC (%) at K = {cross.k}, 95 % bootstrap intervals")
_ = plots.save(fig, "07_rac", figures_dir)"""),
md("""## 6. What the numbers say

The conclusions below are written from the default-scale run on the embedded model (`results/<slug>/07_cross_method/`, its CSV tables); the cell after prints the numbers they rest on, so a run on another model can be read against them."""),
code("""competent = [n for n, t in tasks.items() if t["competent"]]
print(f"tasks the model can do ({len(competent)}/{len(tasks)}): {', '.join(competent) or 'none'}")
for m in methods:
    st = stability.loc[m, "mean"]
    print(f"{m:9s} stability IoU {rounded(st)}; mean RAC Deg {rounded(pivot.loc[m].get('Deg', float('nan')))}, "
          f"Enh {rounded(pivot.loc[m].get('Enh', float('nan')))}")"""),
code("""print(f"wall time {(time.perf_counter() - t_start) / 60:.1f} min")""", metadata={"tags": ["nbval-ignore-output"]}),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "neuronloc", "display_name": "Python (neuronloc)", "language": "python"},
                                                  "language_info": {"name": "python"}})
nbf.write(nb, "notebooks/07_cross_method.ipynb")
print("wrote notebooks/07_cross_method.ipynb")
