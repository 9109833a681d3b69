"""Scale presets: every count a notebook uses, in one place, per `SCALE`.

    from neuronloc import scales
    scale = scales.get(SCALE)                 # "smoke", "default" or "paper"
    scale.neuronllm.n_eval, scale.neg.n_prompts, scale.z(site.n_neurons)

`PAPER` holds the papers' counts (each field says where they come from), `DEFAULT` the
reduced counts of the embedded model on 2 CPU cores (all notebooks <= 3 h), `SMOKE` the
CI-sized ones (`make test`: minutes). Counts are frozen dataclasses; a notebook that needs a
variant makes one with `dataclasses.replace` and records it. Counts of examples are upper
bounds: a loader with fewer examples gives what it has. The methods' own parameters (IG steps,
k, sigma, the KN threshold) are declared once in `neuronloc.configs`; the defaults here read
them from there, and `scale.cnl.method()` / `scale.cross.method(name)` give the config objects.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from . import configs

PAPER_NEURONS = 352_256  # LLaMA 2-7B FFN neurons (32 x 11,008), the base of NeuronLLM's z and K


@dataclass(frozen=True)
class NeuronLLM:
    """QATT, ACE, good/bad neurons, RAC/RCC (notebooks 01-02)."""

    tasks: tuple[str, ...] = tuple(f"neuronllm/{t}" for t in ("ner", "chunking", "sentiment", "commonsense"))  # §4.1: the 4 QATT tasks (load_task names)
    n_train: int = 5  # §4.1: identification examples per task (x 3 proxies = 15 QAs)
    n_eval: int = 300  # §4.1, A.1: 100 evaluation examples per task (50 + 50); ours 300, so the intervals can decide (issue 21)
    n_proxies: int = 3  # §3.3: QATT proxies per example
    ig_steps: int = configs.ACE.steps  # §3.1 Eq. 1: m, alpha = k/m (rule "right")
    z: int | float = 5000  # §3.4: per-example good/bad cut; int = count, float = share of the model's neurons
    k: int | float = configs.ACE.k  # §4.4: good and bad neurons each, and the intervention budget; int or share as z
    ratios: tuple[float, ...] = tuple(i / 10 for i in range(11))  # §4.4: good:bad share of the budget, 0-100 % step 10 %
    budgets: tuple[int, ...] = (10, 25, 50, 100, 150, 200, 250, 500)  # App C.4 Tab 7: K grid (Commonsense)
    n_layers: int | None = None  # None = every layer (§3.1 scores all FFN layers); N = only the last N (smoke)
    budget_task: str = "neuronllm/commonsense"  # App C.4 Tab 7: the K sweep is on Commonsense
    n_pool: int = 400  # ours: examples screened for the comprehended / not split of A.1 (the paper does not say)
    random_seeds: int = 5  # ours: RANDOM drawn this many times (the paper: once)
    n_position: int = 100  # ours: examples of the answer-position vs all-positions ablation
    side_ratios: tuple[float, ...] | None = None  # ratios of the common, cross-task and budget arms (None = `ratios`)
    n_budget: int | None = None  # ours: evaluation examples of the budget sweep (Tab. 7; None = the whole evaluation set)
    timing_repetitions: int = 5  # ours: interleaved repetitions of the Fig. 9 timing (NL-36)


@dataclass(frozen=True)
class CNL:
    """Fidelity / reliability tests, decoupling, CNL masks, erase and enhance (notebooks 03-04)."""

    ig_steps: int = configs.CNL.steps - 1  # §5.1 Eq. 7: S (S + 1 = 20 points, rule "linspace")
    sigma: float = configs.CNL.sigma  # §5.1 Eq. 8: mask threshold
    sigmas: tuple[float, ...] = (3.0, 6.0, 12.0)  # §5.4 Tab 3: erase at each sigma
    n_localize: tuple[tuple[str, int], ...] = (  # §5.3: (load_examples name, examples) per data set, split into two halves
        ("gsm8k", 1600), ("emotion", 2400), ("code", 1200), ("metamath", 700), ("imdb", 800))
    data_sizes: tuple[int, ...] = (100, 200, 400, 800, 1600)  # App E Fig 6: overlap vs data size (sizes not given; GSM8K range)
    max_answer_tokens: int | None = None  # Eq. 7 averages over every answer token; a cap bounds CPU cost
    max_chars: int | None = None  # ours: only examples whose prompt + answer fit this many characters (CPU cost)
    n_facts: int = 1000  # §3.1: facts in the fidelity test (COUNTERFACT)
    n_paraphrases: int = 5  # §3.1: variants per fact (original + 4 GPT-4o rewrites)
    top_layers: int = 3  # §3.1: causal tracing keeps the top k = 3 layers
    n_reliability: int = 1000  # §3.2: zsRE facts (count not stated; the zsRE MEND 1k subset)
    kn_steps: int = 20  # §3.1: KN's IG grid points (Dai et al. 2022: m = 20)
    n_edits: int = 100  # §3.2 Fig 2: facts edited with ROME at each layer (count not stated)
    n_edit_layers: int | None = None  # §3.2 Fig 2: layers edited (None = every layer; N = N evenly spaced layers)
    cov_texts: int = 1000  # §3.2: ROME key second moment, texts of the local corpus (ROME: 100,000 Wikipedia samples)
    n_pairs: int = 1000  # §4.1: decoupling pairs "a+b" vs "Python for a+b"
    pair_steps: int = 20  # §4.2 Eq. 5: IG grid points per sub-sample (not given; Eq. 7's S + 1 = 20)
    epochs: tuple[int, ...] = (1, 5, 10)  # §5.4 Tab 2: fine-tuning epochs
    lr: float = 1e-5  # §5.4: Adam learning rate
    n_finetune: int | None = None  # §5.4: training examples per data set (None = the whole train split)
    n_eval: int | None = None  # §5.4: evaluation examples per data set (None = the whole validation split)
    n_random: int = 5  # §5.4 Tab 4: random samplings for IPP (number not stated)
    n_random_enhance: int = 1  # §5.4 Tab 2: Random fine-tuning runs per data set (the paper: one)
    n_erase: int | None = None  # ours: evaluation questions of each erase (Tab. 3-4, Fig. 5; None = all n_eval)
    n_erase_by: tuple[tuple[str, int], ...] = ()  # ours: (data set, erase questions) where a data set reads fewer
    transfer: bool = True  # §5.4 Fig 5 (CN-21): fine-tune GSM8K's neurons (Located arm) and read the run on Meta_Math

    def erase_n(self, name: str) -> int | None:
        """The erase questions of data set `name`: its `n_erase_by` entry, else `n_erase`."""
        return dict(self.n_erase_by).get(name, self.n_erase)

    @property
    def localize(self) -> dict[str, int]:
        """{data set: examples} of `n_localize`."""
        return dict(self.n_localize)

    def method(self, sigma: float | None = None, spread: str = configs.CNL.spread) -> configs.CNL:
        """The CNL localizer of this scale: Eq. 7 on S + 1 points, Eq. 8 at `sigma` (default `self.sigma`)."""
        return configs.CNL(sigma=self.sigma if sigma is None else sigma, spread=spread, steps=self.ig_steps + 1)


@dataclass(frozen=True)
class NEG:
    """Linearity, NEG, NeurGrad, skill-neuron probes on MCEval8K (notebooks 04-05)."""

    shift_range: float = 10.0  # §2.1: activation shift delta in [-10, 10]
    shift_step: float = 0.2  # §2.1: step 0.2 (101 shifts)
    linear_range: float = 2.0  # §2.2: linearity measured on [-2, 2]
    linear_r: float = 0.95  # §2.2: a neuron is linear if Pearson r >= 0.95
    fig2_prompts: int = 10  # §2.1 Fig 2: prompts
    fig2_neurons: int = 1000  # §2.1 Fig 2: random neurons per model
    n_prompts: int = 1000  # §2.2 Tab 1, §3.2 Tab 2: prompts the model answers correctly (MyriadLAMA)
    n_neurons: int = 100  # §2.2 Tab 1, §3.2 Tab 2: random neurons per prompt
    top_neurons: int = 100  # App A Tab 5: the top-100-gradient neurons per prompt
    ig_steps: int = configs.StudyConfig.ig_steps  # §3.2 Tab 2 IG baseline: Dai et al. (2022)'s m = 20 (rule "linspace")
    timing_ig_path: str = "reference"  # §3.2 Tab 2: IG as Dai et al. (2022) run it, one layer at a time over the whole
    #   sequence (the paper's IG costs 19.349 / 0.149 = 130 CG, a per-layer IG's order; the fast path's ratio is a sensitivity row)
    timing_processes: int = 5  # ours: fresh processes timed one after another, the unit of NG-09's interval (>= 5, issue 19)
    timing_ig_repetitions: int = 2  # ours: interleaved IG / NeurGrad repetitions per process, one prompt each, cycling (NG-09)
    timing_ig_rounds: int = 1  # ours: timed pairs per NG-09 repetition (one reference IG is ~15 s on 2 cores)
    timing_repetitions: int = 4  # ours: interleaved repetitions of the short timings (fast IG / NeurGrad; NeurGrad / CG x processes)
    timing_rounds: int = 3  # ours: timed pairs per short repetition, the smallest time of each method counts (timeit's rule)
    relations: tuple[str, ...] = tuple(f"pararel/{r}" for r in (  # §2.1 MyriadLAMA stand-in: PARAREL relations whose
        "P36", "P103", "P37", "P1376", "P140", "P407"))  # objects SmolLM2-135M often predicts as its top token
    top_k: tuple[int, ...] = (1, 4, 16)  # §3.3 Fig 3: top-K neurons shifted
    attribution_shifts: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))  # §3.3: shift 0.1..1 step 0.1
    multi_sizes: tuple[int, ...] = tuple(2 ** i for i in range(13))  # §4.2 Fig 5: N = 2^0..2^12 neurons
    multi_range: float = 0.5  # §4.2: enhancement range [0, 0.5] ...
    multi_step: float = 0.01  # §4.2: ... step 0.01
    multi_ranges: tuple[float, ...] = (0.1, 1.0, 1.5, 2.0)  # App D Fig 14: wider ranges
    mceval_tasks: tuple[str, ...] = tuple(f"mceval8k/{t}" for t in (  # §5.2, App F Tab 7: the 22 MCEval8K tasks
        "postag", "chunking", "ner", "clang8", "agnews", "amazon-reviews", "imdb", "mnli", "paws", "swag",
        "fever", "myriadlama", "commensenseqa", "templama", "halueval", "toxicity", "stereoset",
        "lti", "mpostag", "mlama", "xnli", "amazon-review-multi"))
    n_probe_train: int = 6000  # App F: train split per task (other LLMs, §5.4: 2^10)
    n_probe_valid: int = 1000  # App F: validation split (picks the neuron-set size)
    n_probe_test: int = 1000  # App F: test split
    probe_sizes: tuple[int, ...] = tuple(2 ** i for i in range(14))  # §5.3: neuron-set sizes 2^0..2^13
    few_shot: bool = True  # §5.4: zero- and few-shot (#demos = #options); False = zero-shot only
    few_shot_tasks: tuple[str, ...] | None = None  # the tasks also run few-shot (None = every task)
    few_shot_sizes: tuple[int, int, int] | None = None  # ours: few-shot train / valid / test per task (None = as zero-shot)
    probe_readout: str | None = None  # ours: read-out of the probe features and LM-Prob (None = each task's NEG read-out)
    n_paws: int = 6000  # §5.5: PAWS questions of the yes/no NEG mirror (NG-21)
    tree_max_log2: int = 12  # §6.4 fn 13: 2^N trees x depth 2^M, N + M < 12
    window: int = 64  # §6.3: substitutability windows of the ranking (Fig 8 caption says 32)
    robustness_neurons: int = 32  # §6.2, App J: skill neurons compared across 12 PAWS contexts


@dataclass(frozen=True)
class Cross:
    """Every localizer of the three papers under one protocol (notebook 07; ours, no paper)."""

    tasks: tuple[str, ...] = tuple(f"neuronllm/{t}" for t in ("ner", "chunking", "sentiment", "commonsense")) + tuple(
        f"mceval8k/{t}" for t in ("myriadlama", "commensenseqa", "agnews", "paws"))  # NeuronLLM's 4 + 4 of NEG's
    methods: tuple[str, ...] = ("ace", "tn", "qrnca", "kn", "cnl", "neurgrad", "act", "random")  # localization.METHODS
    n_competence: int = 100  # questions per task that choose the read-out (= scripts/competence.py's n)
    n_ident: int = 5  # identification examples per set; two disjoint sets give the stability IoU (NeuronLLM's tr = 5)
    n_eval: int = 1000  # evaluation questions per competent task, at most (NeuronLLM A.1: 100; ours: as many as power needs)
    k: int = configs.ACE.k  # budget: neurons per intervention, every method (NeuronLLM's K)
    ig_steps: int | None = None  # IG steps of every IG-based method (None = each method's own: 16, CNL 20)
    random_seeds: int = 5  # RANDOM baselines drawn
    bootstrap: int = 1000  # resamples of the RAC intervals
    cost_repetitions: int = 5  # interleaved timing repetitions of every method on one question (issue 19: >= 5)

    def method(self, name: str, seed: int = 0) -> configs.MethodConfig:
        """The config of localizer `name` under this protocol: budget k, IG steps (None: the method's own)."""
        return configs.method_config(name, k=self.k, steps=self.ig_steps, seed=seed)


@dataclass(frozen=True)
class Scale:
    """One preset. `z` and `k` of NeuronLLM may be counts or shares of the model's neurons."""

    name: str
    neuronllm: NeuronLLM
    cnl: CNL
    neg: NEG
    seeds: tuple[int, ...] = (0,)  # repetitions with different seeds (the papers report one run)
    bootstrap: int = 1000  # resamples for confidence intervals (ours; the papers give none)
    competence_n: int = 100  # questions per task to test the model's competence per read-out (issue 10 item 6)
    cross: Cross = Cross()

    def z(self, n_neurons: int) -> int:
        """NeuronLLM's per-example cut z for a model with `n_neurons` FFN neurons."""
        return _count(self.neuronllm.z, n_neurons)

    def k(self, n_neurons: int) -> int:
        """NeuronLLM's K (good and bad neurons each) for a model with `n_neurons` FFN neurons."""
        return _count(self.neuronllm.k, n_neurons)

    def layers(self, n_layers: int) -> list[int]:
        """The layers NeuronLLM scores in a model with `n_layers` layers (all, or the last N)."""
        keep = self.neuronllm.n_layers
        return list(range(n_layers))[-keep:] if keep else list(range(n_layers))

    def as_dict(self) -> dict:
        """Every field, for the record a notebook writes next to its results."""
        return asdict(self)


def _count(value: int | float, n_neurons: int) -> int:
    if isinstance(value, float):  # a share of the model's neurons
        return max(1, round(value * n_neurons))
    return min(value, n_neurons)


PAPER = Scale("paper", NeuronLLM(), CNL(), NEG())

# The embedded model on 2 CPU cores: the papers' protocols, fewer examples. z keeps the
# paper's share of the neurons (5,000 / 352,256 = 1.42 %, 654 of SmolLM2's 46,080); K stays
# 100 (0.22 % of 46,080) so the 10 % ratio steps are whole neurons.
DEFAULT = Scale(
    "default",
    # notebook 06 in <= 15 min on 2 cores, only the competent tasks run (commonsense): IG with m = 8 (not 16) on 5
    # examples; 280 evaluation examples (not 100, for the intervals) screened from 320; the budget sweep on 60 of them;
    # common / cross-task / budget arms at 3 ratios (not 11)
    NeuronLLM(n_eval=280, ig_steps=8, z=5000 / PAPER_NEURONS, k=100, n_pool=320, n_position=10,
              side_ratios=(0.0, 0.5, 1.0), n_budget=60),
    # CNL Eq. 7 costs ~2 s per answer token on 2 cores (m = 20, all layers); notebook 03's localization 4 min,
    # 02 ~5 min (reduced for time; the notebooks say where). 01 at this scale: 16.9 min from an empty cache (20 facts: KN m = 20, ROME-style tracing with
    # 10 noise draws and a 10-layer window, ROME edits at 3 grid layers + each fact's traced layer)
    CNL(n_localize=(("gsm8k", 12), ("emotion", 12), ("code", 8), ("metamath", 8), ("imdb", 8)),
        data_sizes=(4, 8, 12), max_answer_tokens=3, max_chars=350,
        n_facts=20, n_reliability=24, n_pairs=40, pair_steps=4, kn_steps=20, n_edits=20, n_edit_layers=3,
        # enhance (Emotion): 192 balanced examples = 24 batches of 8 per epoch, until the loss plateaus or 4 epochs (96 Adam
        # steps, ~2 s each on 2 cores) per run, lr 1e-4 (the paper's 1e-5 runs thousands of steps); 204 evaluation questions
        # per data set (34 per Emotion label, issue 22: >= 200); one Random fine-tuning run (the paper's Tab. 2: one), 2 random
        # draws per erase. Erase on the first 120 of them (13 neuron sets on GSM8K and on Code): with all 204 and 2 Random
        # runs the notebook took 74 min (f16e732). Chosen before the next run for the 40-minute limit, expecting CN-18's
        # half-width (3.4 points at 204) to stay below the paper's effect (4.6); it came out 5.0 (flagged underpowered),
        # and the notebook took 58 min (about 47 without other jobs on the machine; Code's erase alone 13 min). So, chosen
        # before the next run for the same limit: Code's erase on its first 60 questions (its four options are whole programs
        # of ~37 tokens, so a Code question costs ~4x a GSM8K one), GSM8K and Meta_Math keep 120: 37.5 min from an empty
        # cache, alone (erase 11 min, fine-tuning 18); CN-18 -7.9 [-13.2, -2.1], every verdict as before
        # GSM8K's Located run for CN-21 (issue 22) is off (transfer=False): with it, 03 took 40.5 min from an empty cache,
        # alone (25345d7; the run, 5.8 min, and its Meta_Math read-out), past the 40-minute limit, and make reproduce
        # about 93 min; SCALE=paper (and smoke) runs it
        epochs=(1, 2, 4), n_finetune=192, lr=1e-4, n_eval=204, n_random=2, n_random_enhance=1, n_erase=120,
        n_erase_by=(("code", 60),), transfer=False),
    # NEG: reduced for time (notebooks 04 + 05 <= 12 min on 2 idle cores; the counts are in the notebooks)
    NEG(fig2_prompts=10, fig2_neurons=32, n_prompts=14, n_neurons=64, top_neurons=64,
        relations=("pararel/P36", "pararel/P103", "pararel/P37"),
        # probes on the MCEval8K task the model is competent at (competence.json: myriadlama, cloze read-out)
        mceval_tasks=("mceval8k/myriadlama",), probe_readout="cloze",
        n_probe_train=200, n_probe_valid=80, n_probe_test=200, few_shot_tasks=("mceval8k/myriadlama",),
        few_shot_sizes=(40, 20, 40), n_paws=40, tree_max_log2=8),
    bootstrap=1000,
    # 07 <= 14 min on 2 cores: only the competent tasks are localized and evaluated; m = 8 for every IG method (half
    # the time); the tasks of results/<slug>/competence.json (commensenseqa is not in it: 2.5 min to measure here)
    cross=Cross(tasks=tuple(t for t in Cross.tasks if t != "mceval8k/commensenseqa"), n_ident=3, n_eval=300, ig_steps=8),
)

# CI: every code path once, minutes in all; the results mean nothing.
SMOKE = Scale(
    "smoke",
    NeuronLLM(tasks=("neuronllm/sentiment", "neuronllm/commonsense"), n_train=1, n_eval=4, ig_steps=4, z=5000 / PAPER_NEURONS, k=20,
              ratios=(0.0, 0.5, 1.0), budgets=(10, 20), n_layers=4, n_pool=4, random_seeds=2, n_position=1,
              side_ratios=(0.0, 1.0)),
    CNL(ig_steps=4, sigmas=(3.0, 6.0), n_localize=(("gsm8k", 6), ("emotion", 6), ("metamath", 4)), data_sizes=(4, 6),
        max_answer_tokens=2, max_chars=350,
        n_facts=4, n_paraphrases=3, n_reliability=4, n_pairs=5, pair_steps=3, kn_steps=4, n_edits=2, n_edit_layers=3,
        cov_texts=100,
        epochs=(1,), n_finetune=6, n_eval=6, n_random=1),  # 6: one per Emotion label (balanced sets)
    NEG(shift_step=1.0, fig2_prompts=1, fig2_neurons=10, n_prompts=2, n_neurons=10, top_neurons=10, ig_steps=4, timing_repetitions=2, timing_processes=2, timing_ig_repetitions=1,
        relations=("pararel/P103",), top_k=(1, 4),
        attribution_shifts=(0.5, 1.0), multi_sizes=(1, 4, 16), multi_step=0.1, multi_ranges=(0.1, 1.0),
        mceval_tasks=("mceval8k/myriadlama",), probe_readout="cloze", n_probe_train=12, n_probe_valid=6, n_probe_test=8,
        probe_sizes=(1, 4, 16), few_shot_tasks=("mceval8k/myriadlama",), few_shot_sizes=(6, 4, 6), n_paws=4,
        tree_max_log2=3, robustness_neurons=4),
    bootstrap=100,
    competence_n=24,
    cross=Cross(tasks=("neuronllm/sentiment", "mceval8k/myriadlama"), n_ident=1, n_eval=8, k=20,  # read-outs from the
                ig_steps=2, random_seeds=2, bootstrap=100, cost_repetitions=2),  # committed competence.json; sentiment fails it
)

SCALES = {s.name: s for s in (SMOKE, DEFAULT, PAPER)}


def get(name: str | Scale) -> Scale:
    """The preset called `name` ("smoke", "default", "paper"); a Scale is returned as it is."""
    if isinstance(name, Scale):
        return name
    try:
        return SCALES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown SCALE {name!r}: use one of {', '.join(map(repr, SCALES))}") from None


__all__ = ["Scale", "NeuronLLM", "CNL", "NEG", "Cross", "SMOKE", "DEFAULT", "PAPER", "SCALES", "get"]
