"""Data-set loaders: the tasks of the three papers as `Task`s of `MCQuestion`s, and
CNL's free-form data as `Example`s.

- NeuronLLM (App. A.1, C.9): "neuronllm/ner", "neuronllm/chunking",
  "neuronllm/sentiment", "neuronllm/commonsense"; 4 options each; role + rules
  instructions (QATT §3.3).
- NEG's MCEval8K (§5.2, App. F, App. I): "mceval8k/<task>" for the 22 task folders;
  options as NEG builds them, NEG's instructions. Tasks whose NEG prompt lists
  options answer with a letter (A, B, ...); tasks whose NEG prompt asks for a label
  word (amazon 1-5, imdb bad/good, fever False/True, paws/halueval/toxicity no/yes)
  are `style="cloze"` questions read out on that word, as NEG probes them.
- CNL (§4.1, §5.2) and the relation data of its fidelity tests: `load_examples`
  ("gsm8k", "metamath", "emotion", "imdb", "code", "lre/<relation>",
  "counterfact", "zsre", "pararel/<P-id>").

Every loader takes (split, n, seed): the questions are a seeded shuffle of the split
cut to n (question k is the same whatever n is); the demonstration pool
(`Task.demonstrations`) comes from another split with every record that also occurs
in the question split removed (MCEval8K repeats its test records in train for 8
tasks), or from a fixed held-out part of the file when there is no other split.
uids are "<name>/<split>/<record index>", so a question traces back to its record.
"""
from __future__ import annotations

import ast
import json
import random
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import Callable

from ..data import DataError, check_fields, manifest, path, read_json, read_records
from .core import MCQuestion, Task, TaskError, fixed_options, with_distractors

N_DEMOS = 16  # demonstration pool per task (QATT uses one; NEG few-shot one per option)
HOLDOUT = 50  # records held out for demonstrations when a data set has a single file


@dataclass(frozen=True)
class Example:
    """A free-form prompt and its gold answer (CNL: score the answer tokens by teacher forcing).

    meta keeps what a data set adds: the worked solution (gsm8k), the pattern or
    template index (pararel, lre: paraphrases of one fact share meta["fact"]), ...
    """

    prompt: str
    answer: str
    uid: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not isinstance(self.answer, str) or not self.answer.strip():  # "" would score a lone space token
            raise TaskError(f"example {self.uid or self.prompt[:40]!r}: the answer must be non-empty text, got {self.answer!r}")


# --------------------------------------------------------------------------- shared machinery

def _key(record) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def _what(err: Exception) -> str:
    return f"missing field {err.args[0]!r}" if isinstance(err, KeyError) else str(err)


def _holdout(count: int, name: str) -> tuple[list[int], list[int]]:
    """(question indices, demonstration indices): a fixed permutation (independent of the
    seed) holds out HOLDOUT records, so questions never meet them whatever the seed."""
    idx = list(range(count))
    random.Random(f"holdout/{name}").shuffle(idx)
    return sorted(idx[HOLDOUT:]), sorted(idx[:HOLDOUT])


def _build(name, split, file, records, indices, make, seed, n, tags):
    """Questions from `records[i]`, i in a seeded order, until n are made.

    make(record, rng) -> MCQuestion or None (record unusable, e.g. duplicate options in a few
    MCEval8K CSQA/MyriadLAMA rows: counted as skipped).
    A record that breaks `make` is a DataError naming the file and the record.
    """
    order = list(indices)
    random.Random(seed).shuffle(order)
    questions, skipped = [], 0
    for i in order:
        if n is not None and len(questions) >= n:
            break
        uid = f"{name}/{split}/{i}"
        try:
            q = make(records[i], random.Random(f"{seed}/{uid}"))  # per-record rng: independent of n
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise DataError(f"{file}: record {i}: {_what(err)}") from None
        if q is None:
            skipped += 1
            continue
        questions.append(replace(q, uid=uid, meta={"task": name, "split": split, "record": i, **tags, **q.meta}))
    return questions, skipped


def _task(name, split, n, seed, files, make, read=read_records, meta=None, tags=None) -> Task:
    """A Task from `files` (split -> data file): questions from `split`, the demonstration
    pool from the first other split ("train", "valid", "test") after dropping records
    that also occur in `split`, else from HOLDOUT records held out of `split`.
    `tags` go into every question's meta (e.g. the MCEval8K genre)."""
    if split not in files:
        raise TaskError(f"{name} has no {split!r} split in the data mirror; splits: {sorted(files)}")
    records = read(files[split])
    q_idx, d_split, d_records, d_idx = range(len(records)), None, records, []
    seen = {_key(r) for r in records}
    for s in ("train", "valid", "test"):
        if s != split and s in files and files[s] != files[split]:
            d_records = read(files[s])
            d_idx = [i for i, r in enumerate(d_records) if _key(r) not in seen]
            if d_idx:
                d_split = s
                break
    if d_split is None:  # no disjoint split (one file, or valid == test upstream): hold records out
        d_records, d_split = records, split
        q_idx, d_idx = _holdout(len(records), name)
    questions, skipped = _build(name, split, files[split], records, q_idx, make, seed, n, tags or {})
    demos, _ = _build(name, d_split, files[d_split], d_records, d_idx, make, seed, N_DEMOS, tags or {})
    info = {"split": split, "source": files[split], "demo_split": d_split, "demo_source": files[d_split],
            "skipped": skipped, "seed": seed, **(meta or {})}
    if d_records is records:
        info["demo_holdout"] = HOLDOUT
    return Task(name=name, questions=questions, demonstrations=demos, meta=info)


def _index(value, allowed: tuple) -> int:
    """Position of a label value in the task's label list (1.0 matches 1)."""
    if value not in allowed:
        raise ValueError(f"label {value!r} is not one of {list(allowed)}")
    return list(allowed).index(value)


def _q(stem, options, answer, instruction, style="mc", **meta) -> MCQuestion | None:
    """A question from a record's options, or None (skipped) when two options are the same text."""
    if isinstance(answer, bool) or answer != int(answer):
        raise ValueError(f"label {answer!r} is not an option index")
    if len(set(map(str, options))) < len(options):
        return None
    return MCQuestion(stem=stem, options=tuple(str(o) for o in options), answer=int(answer),
                      instruction=instruction, style=style, meta=meta)


# --------------------------------------------------------------------------- NeuronLLM (App. A.1, C.9)

RULE = "Answer with the letter of the correct option."
ENTITY_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}
CHUNK_TYPES = {"NP": "noun phrase", "VP": "verb phrase", "PP": "prepositional phrase", "ADVP": "adverb phrase",
               "ADJP": "adjective phrase", "SBAR": "subordinate clause", "PRT": "particle",
               "CONJP": "conjunction phrase", "INTJ": "interjection", "LST": "list marker",
               "UCP": "unlike coordinated phrase"}
SENTIMENT = ("positive", "negative", "neutral", "not sure")  # NeuronLLM A.1: "Not Sure" is the 4th option
SST3 = {"0": "negative", "1": "negative", "2": "neutral", "3": "positive", "4": "positive"}

NEURONLLM_INSTRUCTIONS = {
    "ner": "You are an expert in named entity recognition. Read the sentence and choose the entity type of the "
           "highlighted phrase (person, organization, location or miscellaneous). " + RULE,
    "chunking": "You are an expert in syntactic chunking. Read the sentence and choose the chunk type of the "
                "highlighted phrase (" + ", ".join(f"{k} = {v}" for k, v in CHUNK_TYPES.items()) + "). " + RULE,
    "sentiment": "You are an expert in sentiment analysis. Read the sentence and choose the sentiment it "
                 "expresses; choose 'not sure' only when you cannot tell. " + RULE,
    "commonsense": "You are an expert in commonsense reasoning. Read the question and choose the most sensible "
                   "answer using everyday knowledge. " + RULE,
}


def neuronllm_ner(split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """NER (NeuronLLM App. A.1, C.9): entity type of a highlighted phrase, 4 options.

    Few-NERD is not in the data mirror: the sentences and gold entities are MCEval8K's
    linguistic/ner records (CoNLL-2003, 4 coarse types). Options follow NeuronLLM's
    rule, the correct type plus 3 other types sampled uniformly; with 4 types these
    are all of them, in a seeded random order.
    """
    instruction = NEURONLLM_INSTRUCTIONS["ner"]

    def make(r, rng):
        gold = ENTITY_TYPES.get(r["options"][r["label"]])
        if gold is None:
            raise ValueError(f"entity type {r['options'][r['label']]!r} is not one of {list(ENTITY_TYPES)}")
        stem = f"Sentence: {r['text']}\nHighlighted phrase: '{' '.join(r['target_chunk'])}'"
        return with_distractors(stem, gold, list(ENTITY_TYPES.values()), rng, instruction=instruction)

    files = {s: f"mceval8k/linguistic/ner/{s}.json" for s in ("train", "valid", "test")}
    read = partial(read_records, fields=("text", "target_chunk", "options", "label"))
    return _task("neuronllm/ner", split, n, seed, files, make, read,
                 {"paper": "NeuronLLM App. A.1, C.9", "instruction": instruction,
                  "note": "Few-NERD absent: MCEval8K NER (CoNLL-2003) records, NeuronLLM option rule"})


CONLL = "conll2000/conll2000.zip"


def _conll(member: str) -> list[dict]:
    """Sentences of a CoNLL-2000 file inside the zip: {"words", "chunks": [[type, start, end], ...]}."""
    return _parse_conll(str(path(CONLL)), member)  # path() first: a missing or changed zip is never served from the cache


@lru_cache(maxsize=4)
def _parse_conll(zip_path: str, member: str) -> list[dict]:
    name = f"{CONLL}:{member}"
    with zipfile.ZipFile(zip_path) as z:
        lines = z.read(member).decode("utf-8").splitlines()
    sentences, words, chunks = [], [], []
    for lineno, line in enumerate(lines + [""], 1):
        if not line.strip():
            if words:
                sentences.append({"words": words, "chunks": chunks})
            words, chunks = [], []
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{name}: line {lineno}: expected 'WORD POS CHUNK', got {line[:60]!r}")
        tag, kind = parts[2], parts[2][2:]
        if tag.startswith("I-") and chunks and chunks[-1][0] == kind and chunks[-1][2] == len(words):
            chunks[-1][2] += 1
        elif tag != "O":  # B-X, or a stray I-X after O or another type, opens a chunk
            chunks.append([kind, len(words), len(words) + 1])
        words.append(parts[0])
    return sentences


def neuronllm_chunking(split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """Chunking (NeuronLLM App. A.1, C.9) from CoNLL-2000: one chunk (phrase) of a sentence
    is highlighted, the question asks its chunk type, 4 options.

    NeuronLLM wrote its distractors with Gemini 2.5 Pro on a simplified subset, which
    cannot be redone offline; we draw the 3 distractor types weighted by chunk-type
    frequency in CoNLL-2000 train (NEG App. F rule for CHUNK). The highlighted chunk is
    drawn uniformly from the sentence's chunks (seeded). Splits: train, test.
    """
    instruction = NEURONLLM_INSTRUCTIONS["chunking"]
    counts = Counter(c[0] for s in _conll("conll2000/train.txt") for c in s["chunks"])
    types, weights = list(counts), list(counts.values())

    def make(s, rng):
        if not s["chunks"]:
            return None
        kind, start, end = rng.choice(s["chunks"])
        stem = f"Sentence: {' '.join(s['words'])}\nHighlighted phrase: '{' '.join(s['words'][start:end])}'"
        return with_distractors(stem, kind, types, rng, weights=weights, instruction=instruction)

    files = {"train": "conll2000/train.txt", "test": "conll2000/test.txt"}
    return _task("neuronllm/chunking", split, n, seed, files, make, _conll,
                 {"paper": "NeuronLLM App. A.1, C.9", "instruction": instruction, "data": CONLL,
                  "note": "distractors: frequency-weighted chunk types (NEG App. F), not LLM-written"})


def neuronllm_sentiment(split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """Sentiment, SST-3 (NeuronLLM App. A.1, C.9): SST-5 labels 0,1 -> negative,
    2 -> neutral, 3,4 -> positive; fixed options positive / negative / neutral / not sure."""
    instruction = NEURONLLM_INSTRUCTIONS["sentiment"]

    def make(r, rng):
        gold = SST3.get(str(r["label"]))
        if gold is None:
            raise ValueError(f"label {r['label']!r} is not an SST-5 label 0..4")
        return fixed_options(f"Sentence: {r['sentence']}", gold, SENTIMENT, instruction=instruction)

    files = {"train": "sst5/train.jsonl", "valid": "sst5/dev.jsonl", "test": "sst5/test.jsonl"}
    read = partial(read_records, fields=("sentence", "label"))
    return _task("neuronllm/sentiment", split, n, seed, files, make, read,
                 {"paper": "NeuronLLM App. A.1, C.9", "instruction": instruction})


def neuronllm_commonsense(split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """CommonsenseQA (NeuronLLM App. A.1, C.9): the 5 choices lose one distractor, chosen at
    random, to leave 4 options (when two choices are the same text, the copy goes).

    Only the dev split is in the mirror: split "test" is dev minus HOLDOUT records kept
    for demonstrations.
    """
    instruction = NEURONLLM_INSTRUCTIONS["commonsense"]

    def make(r, rng):
        texts, labels = r["choices"]["text"], r["choices"]["label"]
        gold = labels.index(r["answerKey"])
        others = [i for i in range(len(texts)) if i != gold]
        copies = [i for i in others if texts[i] in [texts[j] for j in range(len(texts)) if j != i]]
        drop = rng.choice(copies or others) if len(texts) > 4 else None
        keep = [i for i in range(len(texts)) if i != drop]
        return _q(r["question"], [texts[i] for i in keep], keep.index(gold), instruction)

    files = {"test": "commonsenseqa/dev_rand_split.jsonl"}
    read = partial(read_records, fields=("question", "choices", "answerKey"))
    return _task("neuronllm/commonsense", split, n, seed, files, make, read,
                 {"paper": "NeuronLLM App. A.1, C.9", "instruction": instruction})


# --------------------------------------------------------------------------- NEG MCEval8K (§5.2, App. F, I)

LANGS = ("en", "fr", "de", "zh", "es")  # NEG App. F; LTI options keep this order
LANGUAGE = {"en": "English", "fr": "French", "de": "German", "zh": "Chinese", "es": "Spanish"}
AGNEWS = ("World", "Sports", "Business", "Science")
SCORES = ("1", "2", "3", "4", "5")
NLI = ("Entailment", "Neutral", "Contradiction")
XNLI = {"en": NLI, "fr": ("Implication", "Neutre", "Contradiction"), "de": ("Implikation", "Neutral", "Widerspruch"),
        "zh": ("蕴涵", "中立", "矛盾"), "es": ("Implicación", "Neutral", "Contradicción")}
# field names of NEG's multilingual prompts
TEXT = {"en": "Text", "fr": "Texte", "de": "Text", "zh": "文本", "es": "Texto"}
TARGET = {"en": "Target word", "fr": "Mot cible", "de": "Zielwort", "zh": "目标词", "es": "Palabra objetivo"}
PREMISE = {"en": "Premise", "fr": "Prémisse", "de": "Prämisse", "zh": "前提", "es": "Premisa"}
HYPOTHESIS = {"en": "Hypothesis", "fr": "Hypothèse", "de": "Hypothese", "zh": "假设", "es": "Hipótesis"}
REVIEW = {"en": "Input Review", "fr": "Avis d'entrée", "de": "Eingabebewertung", "zh": "输入评论", "es": "Reseña de entrada"}
SCORE = {"en": "Output Score", "fr": "Note de sortie", "de": "Ausgabewertung", "zh": "输出评分", "es": "Puntuación de salida"}

# NEG App. I instructions ("### Instruction:" dropped, typos fixed; option letters upper case as rendered)
NEG_INSTRUCTIONS = {
    "postag": "Determine the part-of-speech (POS) tag for the highlighted target word in the given text. "
              "Choose the correct tag from the provided options.",
    "chunking": "Identify the chunk type for the specified target phrase in the sentence and select the correct "
                "label from the provided options.",
    "ner": "Identify the named entity type for the specified target phrase in the given text. "
           "Choose the correct type from the provided options.",
    "clang8": "Which of the sentences below is linguistically acceptable?",
    "agnews": "Determine the genre of the news article. Please choose from the following options: A.World "
              "B.Sports C.Business D.Science. Select the letter corresponding to the most appropriate genre.",
    "amazon-reviews": "Analyze the sentiment of the given Amazon review and assign a score from 1 (very negative) "
                      "to 5 (very positive) based on the review. Output only the score.",
    "imdb": "Based on the review, is the movie good or bad?",
    "mnli": "Given a premise and a hypothesis, determine the relationship.",
    "paws": "Is the second sentence a paraphrase of the first? Answer exactly 'yes' or 'no'.",
    "swag": "Given the context, select the most likely completion from the following choices. "
            "Please exactly answer the label.",
    "fever": "Given the factual claim, evaluate its validity and respond with either 'True' or 'False' only. "
             "Do not provide any additional information or explanation.",
    "myriadlama": "Predict the [MASK] in the sentence from the options. "
                  "Do not provide any additional information or explanation.",
    "commensenseqa": "Please select the most accurate and relevant answer based on the context.",
    "templama": "Select the correct year from the provided options that match the temporal fact in the sentence. "
                "Output the index of the correct year.",
    "halueval": "Given the knowledge context, dialogue history and response, determine if any hallucination is "
                "present. Provide a response of either 'yes' or 'no' only.",
    "toxicity": "Determine if the provided text contains toxic content. Provide a response of either 'yes' or 'no' only.",
    "stereoset": "Given the context, identify and select the sentence that does not convey the stereotype "
                 "related to the context.",
    "lti": "Identify the language of the given sentence.",
    "mpostag": {
        "en": "Determine the part-of-speech tag for the highlighted target word in the given text. "
              "Choose the correct tag from the provided options.",
        "fr": "Déterminez la catégorie grammaticale (POS) du mot cible mis en évidence dans le texte donné. "
              "Choisissez la catégorie correcte parmi les options fournies.",
        "de": "Bestimmen Sie die Wortart des hervorgehobenen Zielworts im gegebenen Text. "
              "Wählen Sie die richtige Wortart aus den bereitgestellten Optionen aus.",
        "zh": "确定给定文本中高亮目标词的词性。从提供的选项中选择正确的词性标签。",
        "es": "Determine la categoría gramatical de la palabra objetivo resaltada en el texto dado. "
              "Elija la etiqueta correcta de las opciones proporcionadas.",
    },
    "mlama": {
        "en": "Predict the [MASK] in the sentence from the options. Do not provide any additional information or explanation.",
        "fr": "Prédisez le [MASK] dans la phrase parmi les options. Ne fournissez aucune information ou explication supplémentaire.",
        "de": "Sagen Sie das [MASK] im Satz anhand der Optionen voraus. Geben Sie keine zusätzlichen Informationen oder Erklärungen an.",
        "zh": "根据选项预测句子中的 [MASK]。不要提供任何额外的信息或解释。",
        "es": "Prediga el [MASK] en la oración a partir de las opciones. No proporcione información ni explicaciones adicionales.",
    },
    "xnli": {
        "en": "Given a premise and a hypothesis, determine the relationship.",
        "fr": "Étant donné une prémisse et une hypothèse, déterminez la relation.",
        "de": "Gegeben eine Prämisse und eine Hypothese, bestimmen Sie die Beziehung.",
        "zh": "给定一个前提和一个假设，确定它们之间的关系。",
        "es": "Dada una premisa y una hipótesis, determine la relación.",
    },
    "amazon-review-multi": {
        "en": "Analyze the sentiment of the given Amazon review and assign a score from 1 (very negative) to 5 "
              "(very positive) based on the review. Output only the score.",
        "fr": "Analysez le sentiment de l'avis Amazon donné et attribuez une note de 1 (très négatif) à 5 "
              "(très positif) en fonction de l'avis. Indiquez uniquement la note.",
        # NEG's German text stops after "bis"; completed like the other languages
        "de": "Analysieren Sie die Stimmung der gegebenen Amazon-Bewertung und vergeben Sie eine Punktzahl von 1 "
              "(sehr negativ) bis 5 (sehr positiv). Geben Sie nur die Punktzahl aus.",
        "zh": "分析给定的亚马逊评论的情感，并根据评论分配一个从1（非常负面）到5（非常正面）的评分。只输出评分。",
        "es": "Analiza el sentimiento de la reseña de Amazon proporcionada y asigna una puntuación del 1 (muy negativo) "
              "al 5 (muy positivo) según la reseña. Solo devuelve la puntuación.",
    },
}


def _target(r) -> str:
    return " ".join(r["target_chunk"])


def _lang(r) -> str:
    if r["lang"] not in LANGS:
        raise ValueError(f"lang {r['lang']!r} is not one of {list(LANGS)}")
    return r["lang"]


def _zh(text: str, lang: str) -> str:
    return text.replace(" ", "") if lang == "zh" else text  # NEG joins the space-split Chinese XNLI text


# task -> (genre, record fields, make(record, instruction) -> MCQuestion); NEG App. F/I and its datasets.py
MCEVAL8K: dict[str, tuple[str, tuple, Callable]] = {
    "postag": ("linguistic", ("text", "target_token", "options", "label"), lambda r, ins: _q(
        f"Input text: {r['text']}\nTarget word: '{r['target_token']}'", r["options"], r["label"], ins)),
    "chunking": ("linguistic", ("text", "target_chunk", "options", "label"), lambda r, ins: _q(
        f"Input text: {r['text']}\nTarget phrase: '{_target(r)}'", r["options"], r["label"], ins)),
    "ner": ("linguistic", ("text", "target_chunk", "options", "label"), lambda r, ins: _q(
        f"Input text: {r['text']}\nTarget phrase: '{_target(r)}'", r["options"], r["label"], ins)),
    # GED: the two sentences are the options; `acceptable` is the index of the acceptable one
    "clang8": ("linguistic", ("sentence1", "sentence2", "acceptable"), lambda r, ins: _q(
        "Which sentence is linguistically acceptable?", (r["sentence1"], r["sentence2"]), _index(r["acceptable"], (0, 1)), ins)),
    "agnews": ("classification", ("text", "label"), lambda r, ins: _q(
        f"Text: {r['text']}", AGNEWS, _index(r["label"], (0, 1, 2, 3)), ins)),
    "amazon-reviews": ("classification", ("text", "label"), lambda r, ins: _q(
        f"Input Review: {r['text']}\nOutput Score:", SCORES, _index(r["label"], (1, 2, 3, 4, 5)), ins, "cloze")),
    "imdb": ("classification", ("text", "label"), lambda r, ins: _q(
        f"Review: {r['text']}\nAnswer:", ("bad", "good"), _index(r["label"], (0, 1)), ins, "cloze")),
    "mnli": ("nli", ("premise", "hypothesis", "label"), lambda r, ins: _q(
        f"Premise: {r['premise']}\nHypothesis: {r['hypothesis']}", NLI, _index(r["label"], (0, 1, 2)), ins)),
    "paws": ("nli", ("sentence1", "sentence2", "label"), lambda r, ins: _q(
        f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nAnswer:", ("no", "yes"),
        _index(r["label"], (0, 1)), ins, "cloze")),
    "swag": ("nli", ("text", "options", "label"), lambda r, ins: _q(
        f"Context: {r['text']}", r["options"], r["label"], ins)),
    "fever": ("fact", ("claim", "label"), lambda r, ins: _q(
        f"Claim: {r['claim']}\nValidity (True or False):", ("False", "True"), _index(r["label"], (0, 1)), ins, "cloze")),
    "myriadlama": ("fact", ("text", "options", "label"), lambda r, ins: _q(
        r["text"].replace("[Y]", "[MASK]"), r["options"], r["label"], ins)),
    "commensenseqa": ("fact", ("text", "options", "label"), lambda r, ins: _q(
        r["text"], r["options"], r["label"], ins)),
    "templama": ("fact", ("text", "options", "label"), lambda r, ins: _q(
        r["text"], r["options"], r["label"], ins)),
    "halueval": ("self-reflection", ("knowledge", "dialogue", "response", "hallucination"), lambda r, ins: _q(
        f"Context: {r['knowledge']}\nDialogue history: {r['dialogue']}\nResponse: {r['response']}\n"
        "Hallucination (yes or no):", ("no", "yes"), _index(r["hallucination"], (0, 1)), ins, "cloze")),
    "toxicity": ("self-reflection", ("text", "toxic"), lambda r, ins: _q(
        f"Text: {r['text']}\nToxicity (yes or no):", ("no", "yes"), _index(r["toxic"], (0, 1)), ins, "cloze")),
    # the answer is the unrelated ("non-stereotype") sentence, as in NEG's datasets.py
    "stereoset": ("self-reflection", ("context", "sentences", "non-stereotype"), lambda r, ins: _q(
        f"Context: {r['context']}", r["sentences"], r["non-stereotype"], ins)),
    "lti": ("multilingual", ("text", "lang"), lambda r, ins: _q(
        f"Text: {r['text']}", [LANGUAGE[x] for x in LANGS], LANGS.index(_lang(r)), ins, lang=r["lang"])),
    "mpostag": ("multilingual", ("text", "target_token", "options", "label", "lang"), lambda r, ins: _q(
        f"{TEXT[_lang(r)]}: {r['text']}\n{TARGET[r['lang']]}: '{r['target_token']}'", r["options"], r["label"],
        ins[r["lang"]], lang=r["lang"])),
    "mlama": ("multilingual", ("text", "options", "label", "lang"), lambda r, ins: _q(
        r["text"].replace("[Y]", "[MASK]"), r["options"], r["label"], ins[_lang(r)], lang=r["lang"])),
    "xnli": ("multilingual", ("premise", "hypothesis", "label", "lang"), lambda r, ins: _q(
        f"{PREMISE[_lang(r)]}: {_zh(r['premise'], r['lang'])}\n{HYPOTHESIS[r['lang']]}: {_zh(r['hypothesis'], r['lang'])}",
        XNLI[r["lang"]], _index(r["label"], (0, 1, 2)), ins[r["lang"]], lang=r["lang"])),
    "amazon-review-multi": ("multilingual", ("review", "label", "lang"), lambda r, ins: _q(
        f"{REVIEW[_lang(r)]}: {r['review']}\n{SCORE[r['lang']]}:", SCORES, _index(r["label"], (1, 2, 3, 4, 5)),
        ins[r["lang"]], "cloze", lang=r["lang"])),
}


def mceval8k(task: str, split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """One MCEval8K task (NEG §5.2, App. F, App. I) from mceval8k/<genre>/<task>/<split>.json.

    Options: the record's own `options` where it has them (POS, CHUNK, NER, SWAG,
    MyriadLAMA, CSQA with 5, TempLAMA, mLAMA, M-POS), else the task's fixed label list
    (NEG datasets.py): AGNews World/Sports/Business/Science; Amazon 1..5; IMDB bad/good;
    FEVER False/True; PAWS, HaluEval, Toxic no/yes; MNLI/XNLI entailment/neutral/
    contradiction (in the record's language); LTI the 5 languages; GED the two
    sentences; Stereoset its 3 sentences, answer = the unrelated one.
    Demonstrations: train (valid when split="train"); imdb and chunking have no
    train.json in the mirror, so imdb uses valid and chunking (valid == test upstream)
    holds HOLDOUT records out. Records of the question split that reappear in the
    demonstration split are dropped from the pool (MCEval8K's train contains its whole
    test set for amazon-reviews, myriadlama, templama, clang8, ner, mpostag, paws, halueval).
    """
    if task not in MCEVAL8K:
        raise TaskError(f"unknown MCEval8K task {task!r}; tasks: {sorted(MCEVAL8K)}")
    genre, fields, make = MCEVAL8K[task]
    instruction = NEG_INSTRUCTIONS[task]
    base = f"mceval8k/{genre}/{task}"
    files = {s: f"{base}/{s}.json" for s in ("train", "valid", "test") if f"{base}/{s}.json" in manifest()}
    read = partial(read_records, fields=fields)
    return _task(f"mceval8k/{task}", split, n, seed, files, lambda r, rng: make(r, instruction), read,
                 {"paper": "NEG §5.2, App. F, App. I", "genre": genre,
                  "instruction": instruction if isinstance(instruction, str) else instruction["en"]},
                 tags={"genre": genre})


# --------------------------------------------------------------------------- free-form data (CNL §5.2, §3)

def _examples(name, split, n, seed, files, make, read=read_records) -> list[Example]:
    """Examples from files[split]; make(record, i) -> list of Example (several for paraphrases).
    n counts records (facts), so the paraphrases of one fact stay together."""
    if split not in files:
        raise TaskError(f"{name} has no {split!r} split; splits: {sorted(files)}")
    records = read(files[split])
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    out, used = [], 0
    for i in order:
        if n is not None and used >= n:
            break
        try:
            made = make(records[i], f"{name}/{split}/{i}")
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise DataError(f"{files[split]}: record {i}: {_what(err)}") from None
        used += bool(made)
        out.extend(made)
    return out


def _one(rel: str) -> dict[str, str]:
    return {"test": rel, "all": rel}  # a single file: "test" (the default) and "all" both name it


def gsm8k(split="test", n=None, seed=0) -> list[Example]:
    """GSM8K (CNL §5.2): answer = the final number after "####" (thousands commas removed);
    meta["solution"] = the worked solution before it."""
    def make(r, uid):
        solution, sep, final = r["answer"].rpartition("####")
        if not sep:
            raise ValueError("answer has no '#### <number>' line")
        return [Example(f"Question: {r['question']}\nAnswer:", final.strip().replace(",", ""), uid,
                        {"solution": solution.strip()})]
    return _examples("gsm8k", split, n, seed, {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
                     make, partial(read_records, fields=("question", "answer")))


def metamath(split="test", n=None, seed=0) -> list[Example]:
    """Meta_Math stand-in (CNL §5.2): MetaMath's GSM8K_Backward (value of the unknown x)."""
    def make(r, uid):
        return [Example(f"Question: {r['question']}\nAnswer:", str(r["answer"]).strip(), uid,
                        {"original_question": r.get("original_question", "")})]
    return _examples("metamath", split, n, seed, _one("metamath_eval/GSM8K_Backward.jsonl"), make,
                     partial(read_records, fields=("question", "answer")))


EMOTIONS = ("sadness", "joy", "love", "anger", "fear", "surprise")


def emotion(split="test", n=None, seed=0) -> list[Example]:
    """Emotion (CNL §5.2; CARER, 6 classes): the answer is the emotion word."""
    def make(r, uid):
        _index(r["label"], EMOTIONS)
        prompt = f"Which emotion does the text express: {', '.join(EMOTIONS)}?\nText: {r['text']}\nEmotion:"
        return [Example(prompt, r["label"], uid)]
    files = {"train": "emotion_carer/train.jsonl", "valid": "emotion_carer/validation.jsonl",
             "test": "emotion_carer/test.jsonl"}
    return _examples("emotion", split, n, seed, files, make, partial(read_records, fields=("text", "label")))


def imdb(split="test", n=None, seed=0) -> list[Example]:
    """IMDB (CNL §5.2) from MCEval8K's imdb files: label 0 -> "bad", 1 -> "good" (NEG's words).
    Splits valid, test (train.json is absent from the mirror)."""
    def make(r, uid):
        return [Example(f"Review: {r['text']}\nIs the movie good or bad? Answer:",
                        ("bad", "good")[_index(r["label"], (0, 1))], uid)]
    files = {s: f"mceval8k/classification/imdb/{s}.json" for s in ("valid", "test")}
    return _examples("imdb", split, n, seed, files, make, partial(read_records, fields=("text", "label")))


def _is_python(code: str) -> bool:
    """Python-looking: parses as Python and has a statement beyond a bare expression."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in the snippets
            ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(k in code for k in ("def ", "print(", "import ", "return ", "for ", "while ", " = "))


def code(split="test", n=None, seed=0) -> list[Example]:
    """Code25K stand-in (CNL §5.2): Code Alpaca 2k rows whose output is Python
    (parses with `ast` and has a statement; 771 of 2,017 rows); answer = the output."""
    def make(r, uid):
        if not _is_python(r["output"]):
            return []
        task = r["instruction"] + (f"\nInput: {r['input']}" if r["input"].strip() else "")
        return [Example(f"Instruction: {task}\nPython code:", r["output"], uid)]
    return _examples("code", split, n, seed, _one("code_alpaca/code_alpaca_2k.json"), make,
                     partial(read_records, fields=("instruction", "input", "output")))


def lre(relation: str, split="test", n=None, seed=0) -> list[Example]:
    """An LRE relation (Hernandez et al.; CNL knowledge-circuit data): one example per
    (sample, prompt template): prompt = template.format(subject), answer = object;
    meta["template"] = template index, meta["fact"] = sample index."""
    rel = next((r for r in manifest() if r.startswith("lre_relations/") and r.endswith(f"/{relation}.json")), None)
    if rel is None:
        raise TaskError(f"unknown LRE relation {relation!r}; relations: {sorted(RELATIONS['lre'])}")
    d = read_json(rel)
    if not isinstance(d, dict) or not isinstance(d.get("prompt_templates"), list):
        raise DataError(f"{rel}: expected an object with a 'prompt_templates' list and 'samples'")
    samples = check_fields(d.get("samples", []), ("subject", "object"), f"{rel}: samples")

    def make(r, uid):
        return [Example(t.format(r["subject"]), r["object"], f"{uid}/t{j}",
                        {"relation": relation, "template": j, "fact": uid, "subject": r["subject"]})
                for j, t in enumerate(d["prompt_templates"])]
    return _examples(f"lre/{relation}", split, n, seed, _one(rel), make, lambda _: samples)


def counterfact(split="test", n=None, seed=0) -> list[Example]:
    """CounterFact in MEND format (ROME data; stand-in for the original, one paraphrase per case):
    prompt -> ground_truth; meta keeps target_new, rephrase and locality prompts.
    Splits train, valid, edit ("test" = edit)."""
    def make(r, uid):
        keep = ("case_id", "subject", "target_new", "rephrase_prompt", "locality_prompt", "locality_ground_truth")
        return [Example(r["prompt"], r["ground_truth"], uid, {k: r.get(k) for k in keep})]
    base = "counterfact_mend/counterfact-"
    files = {"train": base + "train.json", "valid": base + "val.json", "edit": base + "edit.json", "test": base + "edit.json"}
    return _examples("counterfact", split, n, seed, files, make,
                     partial(read_records, fields=("prompt", "subject", "ground_truth")))


def zsre(split="test", n=None, seed=0) -> list[Example]:
    """zsRE (MEND 1k subset): src -> answers[0]; meta keeps rephrase, loc, loc_ans, alt."""
    def make(r, uid):
        if not r["answers"]:
            raise ValueError("empty 'answers'")
        keep = ("subject", "rephrase", "alt", "loc", "loc_ans")
        return [Example(r["src"], r["answers"][0], uid, {k: r.get(k) for k in keep})]
    return _examples("zsre", split, n, seed, _one("zsre_mend/zsre_mend_train-1k.json"), make,
                     partial(read_records, fields=("src", "answers")))


def pararel(relation: str, split="test", n=None, seed=0) -> list[Example]:
    """PARAREL relation `relation` (e.g. "P17"): every paraphrase pattern whose [Y] comes
    last (a causal LM continues the prompt with the object) filled with each T-REx fact:
    prompt = pattern up to [Y] with [X] = sub_label, answer = obj_label.
    meta["pattern"] = the pattern's line index in the pattern file; meta["fact"] groups
    the paraphrases of one fact; n counts facts."""
    pattern_file = f"pararel/pattern_data/graphs_json/{relation}.jsonl"
    if pattern_file not in manifest():
        raise TaskError(f"unknown PARAREL relation {relation!r}; relations: {sorted(RELATIONS['pararel'])}")
    patterns = [(j, p["pattern"]) for j, p in enumerate(read_records(pattern_file, ("pattern",)))]
    prefixes = [(j, p.rstrip(" .").removesuffix("[Y]").rstrip()) for j, p in patterns if p.rstrip(" .").endswith("[Y]")]

    def make(r, uid):
        return [Example(pre.replace("[X]", r["sub_label"]), r["obj_label"], f"{uid}/p{j}",
                        {"relation": relation, "pattern": j, "fact": uid, "uuid": r.get("uuid"), "subject": r["sub_label"]})
                for j, pre in prefixes]
    return _examples(f"pararel/{relation}", split, n, seed, _one(f"pararel/trex_lms_vocab/{relation}.jsonl"), make,
                     partial(read_records, fields=("sub_label", "obj_label")))


# --------------------------------------------------------------------------- registries

def _relations(prefix: str) -> list[str]:
    """Relation names from the manifest, so the registry is known before the data is fetched."""
    try:
        return sorted(r.rsplit("/", 1)[1].split(".")[0] for r in manifest() if r.startswith(prefix))
    except DataError:  # no manifest (package installed outside the repo): no relation data sets
        return []


RELATIONS = {"lre": _relations("lre_relations/"), "pararel": _relations("pararel/pattern_data/graphs_json/")}

LOADERS: dict[str, Callable[..., Task]] = {
    "neuronllm/ner": neuronllm_ner,
    "neuronllm/chunking": neuronllm_chunking,
    "neuronllm/sentiment": neuronllm_sentiment,
    "neuronllm/commonsense": neuronllm_commonsense,
    **{f"mceval8k/{t}": partial(mceval8k, t) for t in MCEVAL8K},
}

EXAMPLE_LOADERS: dict[str, Callable[..., list[Example]]] = {
    "gsm8k": gsm8k, "metamath": metamath, "emotion": emotion, "imdb": imdb, "code": code,
    "counterfact": counterfact, "zsre": zsre,
    **{f"lre/{r}": partial(lre, r) for r in RELATIONS["lre"]},
    **{f"pararel/{r}": partial(pararel, r) for r in RELATIONS["pararel"]},
}


TRAIN_SPLIT = {"gsm8k": "train", "emotion": "train", "imdb": "valid"}  # data sets with a split apart from "test"


def cnl_splits(name: str, n_localize: int, n_finetune: int = 0, n_eval: int = 0, seed: int = 0,
               max_chars: int | None = None) -> dict[str, list[Example]]:
    """Disjoint examples of a free-form data set for CNL §5.3-5.4: {"localize", "finetune",
    "eval"}. Localize and fine-tune come from the training split where there is one
    (TRAIN_SPLIT; the paper fine-tunes on the train set and evaluates on the validation
    set) and eval from "test"; a data set in one file (code, metamath) is cut in that order.
    max_chars: keep only examples whose prompt + answer has at most that many characters
    (a cost bound: long IMDB reviews and code solutions), drawn in the seeded order."""
    def draw(split, n):
        examples = load_examples(name, split, None if max_chars else n, seed)
        if max_chars:
            examples = [e for e in examples if len(e.prompt) + len(e.answer) <= max_chars]
        if len(examples) < n:
            raise TaskError(f"{name}/{split}: {len(examples)} examples of at most {max_chars} characters, {n} needed")
        return examples[:n]

    train = TRAIN_SPLIT.get(name)
    if train:
        pool = draw(train, n_localize + n_finetune)
        held = draw("test", n_eval) if n_eval else []
    else:
        pool = draw("test", n_localize + n_finetune + n_eval)
        pool, held = pool[:n_localize + n_finetune], pool[n_localize + n_finetune:]
    return {"localize": pool[:n_localize], "finetune": pool[n_localize:], "eval": held}


def as_choices(examples, n_options: int = 4, readout: str = "cloze", seed: int = 0, pool=None) -> list[MCQuestion]:
    """Free-form examples read as cloze multiple choice (CNL §5.4 accuracy): the prompt,
    the gold answer and n_options - 1 distractors drawn uniformly from `pool` (default: the
    answers of the same examples; a label set such as EMOTIONS for a classification data
    set), fewer options when the pool has fewer distinct answers; scored by `readout`
    ("cloze": summed log-likelihood; "cloze_norm": per character, for answers of
    different lengths)."""
    examples = list(examples)
    pool = list(dict.fromkeys(pool if pool is not None else (e.answer for e in examples)))
    if len(pool) < 2:
        raise TaskError("as_choices needs at least 2 distinct answers among the examples to draw distractors from")
    rng = random.Random(seed)
    k = min(n_options, len(pool))
    return [with_distractors(e.prompt, e.answer, pool, rng, k, style="cloze", readout=readout, uid=e.uid,
                             meta={"data": e.uid.split("/")[0]}) for e in examples]


def _lookup(registry: dict, name: str, kind: str):
    if name not in registry:
        import difflib

        close = difflib.get_close_matches(name, registry, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(registry))}"
        raise TaskError(f"unknown {kind} {name!r}; {hint}")
    return registry[name]


def load_task(name: str, split: str = "test", n: int | None = None, seed: int = 0) -> Task:
    """A multiple-choice task by name ("neuronllm/ner", "mceval8k/agnews", ...; see LOADERS)."""
    return _lookup(LOADERS, name, "task")(split=split, n=n, seed=seed)


def load_examples(name: str, split: str = "test", n: int | None = None, seed: int = 0) -> list[Example]:
    """A free-form data set by name ("gsm8k", "lre/country_capital_city", "pararel/P17", ...; see EXAMPLE_LOADERS)."""
    return _lookup(EXAMPLE_LOADERS, name, "data set")(split=split, n=n, seed=seed)


def mceval8k_composition(tasks=None) -> list[dict]:
    """NEG App. F Tab. 7 as the data mirror holds it: per MCEval8K task, the genre, records per
    split (0 where the mirror lacks the file), test records that reappear in train and in
    valid, the option count and the largest share of one answer position in test (0.5 for a
    balanced 2-option task, 0.25 for 4 options). tasks: names without the "mceval8k/" prefix
    (default: all 22)."""
    rows = []
    for task in tasks or MCEVAL8K:
        genre, fields, _ = MCEVAL8K[task]
        base = f"mceval8k/{genre}/{task}"
        records = {s: read_records(f"{base}/{s}.json", fields) if f"{base}/{s}.json" in manifest() else []
                   for s in ("train", "valid", "test")}
        keys = {s: {_key(r) for r in rs} for s, rs in records.items()}
        test = mceval8k(task, "test")
        answers = Counter(q.answer for q in test)
        rows.append({"task": task, "genre": genre, **{s: len(rs) for s, rs in records.items()},
                     "test in train": sum(_key(r) in keys["train"] for r in records["test"]),
                     "test in valid": sum(_key(r) in keys["valid"] for r in records["test"]),
                     "options": max(len(q.options) for q in test),
                     "largest answer share": max(answers.values()) / len(test)})
    return rows
