"""Loaders: every task gives well-formed, seeded questions whose answers match the
source records; free-form data sets and the CNL decoupling pairs.

Reads the data root filled by `make data`; when it is not filled, fetches from the
mirror ($NEURONLOC_DATA_MIRROR, else ../shared/data next to the repo) into a temp root.
"""
import ast
import json
import os
import re
from pathlib import Path

import pytest

from neuronloc import data
from neuronloc.tasks import TaskError, render
from neuronloc.tasks.generators import decoupling_pairs
from neuronloc.tasks.loaders import (CHUNK_TYPES, EXAMPLE_LOADERS, LOADERS, MCEVAL8K, _conll, load_examples,
                                     load_task)


@pytest.fixture(scope="module", autouse=True)
def data_ready(tmp_path_factory):
    if not data.verify():
        yield
        return
    mirror = os.environ.get("NEURONLOC_DATA_MIRROR") or (data.repo_root() / ".." / "shared" / "data")
    if not Path(mirror).is_dir():
        pytest.fail(f"data root {data.data_root()} is not filled; {data.MAKE_DATA}")
    root = tmp_path_factory.mktemp("data")
    data.fetch(mirror, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURONLOC_DATA", str(root))
        yield


# options per MCEval8K task: NEG Table 7 (CSQA keeps the 5 choices its records and App. I prompt have)
N_OPTIONS = {"postag": 4, "chunking": 4, "ner": 4, "clang8": 2, "agnews": 4, "amazon-reviews": 5, "imdb": 2,
             "mnli": 3, "paws": 2, "swag": 4, "fever": 2, "myriadlama": 4, "commensenseqa": 5, "templama": 4,
             "halueval": 2, "toxicity": 2, "stereoset": 3, "lti": 5, "mpostag": 4, "mlama": 4, "xnli": 3,
             "amazon-review-multi": 5}


def test_registry_covers_all_tasks():
    folders = {rel.split("/")[2] for rel in data.manifest() if rel.startswith("mceval8k/")}
    assert len(folders) == 22 and set(MCEVAL8K) == folders == set(N_OPTIONS)
    assert {f"mceval8k/{t}" for t in folders} | {"neuronllm/ner", "neuronllm/chunking", "neuronllm/sentiment",
                                                 "neuronllm/commonsense"} == set(LOADERS)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_questions_well_formed(name):
    task = load_task(name, n=40, seed=1)
    want = 4 if name.startswith("neuronllm/") else N_OPTIONS[name.split("/")[1]]
    assert len(task) == 40 and len(task.demonstrations) > 0
    for q in task.questions + task.demonstrations:
        assert len(q.options) == want and len(set(q.options)) == want, q.uid
        assert 0 <= q.answer < want and q.instruction and q.uid.startswith(name + "/")
        assert render(q).strip()
        if name.startswith("mceval8k/"):
            assert q.meta["genre"] == MCEVAL8K[name.split("/")[1]][0]
        if name.split("/")[1] in {"lti", "mpostag", "mlama", "xnli", "amazon-review-multi"}:
            assert q.meta["lang"] in {"en", "fr", "de", "zh", "es"}
    uids = [q.uid for q in task]
    assert len(set(uids)) == len(uids)
    demo_uids = {q.uid for q in task.demonstrations}
    assert not demo_uids & set(uids)
    # demonstrations never repeat a question of the full split
    full = {(q.stem, q.options) for q in load_task(name, seed=1)}
    assert not full & {(q.stem, q.options) for q in task.demonstrations}


@pytest.mark.parametrize("name", ["neuronllm/ner", "neuronllm/chunking", "mceval8k/agnews", "mceval8k/mlama"])
def test_seeded_and_n_is_a_prefix(name):
    a, b = load_task(name, n=10, seed=3), load_task(name, n=10, seed=3)
    assert [(q.uid, q.options, q.answer) for q in a] == [(q.uid, q.options, q.answer) for q in b]
    assert [(q.uid, q.options) for q in load_task(name, n=5, seed=3)] == [(q.uid, q.options) for q in a][:5]
    assert [q.uid for q in load_task(name, n=10, seed=4)] != [q.uid for q in a]


def find(task, uid):
    return next(q for q in task.questions + task.demonstrations if q.uid == uid)


def test_answers_match_source_records():
    t = lambda name: load_task(name)  # noqa: E731
    assert find(t("mceval8k/agnews"), "mceval8k/agnews/test/0").answer_text == "World"  # "US Hostage Apparently Beheaded"
    ner = find(t("mceval8k/ner"), "mceval8k/ner/test/0")  # "Gong Zhichao ( China ) ...", target China
    assert "'China'" in ner.stem and ner.answer_text == "LOC"
    assert find(t("neuronllm/ner"), "neuronllm/ner/test/0").answer_text == "location"
    assert find(t("mceval8k/clang8"), "mceval8k/clang8/test/0").answer_text.startswith("People need to take responsibility for")
    assert find(t("mceval8k/stereoset"), "mceval8k/stereoset/test/0").answer_text == "The sunset was  beautiful."
    assert find(t("mceval8k/lti"), "mceval8k/lti/test/0").answer_text == "English"
    xnli = find(t("mceval8k/xnli"), "mceval8k/xnli/test/0")  # Glenn Loury "a conservative" -> entailment
    assert xnli.answer_text == "Entailment" and xnli.meta["lang"] == "en"
    fever = find(t("mceval8k/fever"), "mceval8k/fever/test/0")  # "Mariah Carey is a mute."
    assert fever.style == "cloze" and fever.answer_label == "False"
    assert find(t("mceval8k/amazon-reviews"), "mceval8k/amazon-reviews/test/0").answer_label == "1"
    assert find(t("mceval8k/myriadlama"), "mceval8k/myriadlama/test/0").stem.endswith("[MASK].")
    sst = find(t("neuronllm/sentiment"), "neuronllm/sentiment/test/0")  # "no movement , no yuks", label 1
    assert "no yuks" in sst.stem and sst.answer_text == "negative" and sst.options == ("positive", "negative", "neutral", "not sure")


def test_commonsense_keeps_the_gold_answer():
    lines = [json.loads(x) for x in data.path("commonsenseqa/dev_rand_split.jsonl").read_text().splitlines()]
    task = load_task("neuronllm/commonsense")
    assert len(task) == len(lines) - 50 and task.meta["demo_holdout"] == 50
    for q in task.questions + task.demonstrations:
        r = lines[q.meta["record"]]
        texts = r["choices"]["text"]
        assert q.answer_text == texts[r["choices"]["label"].index(r["answerKey"])]
        assert set(q.options) <= set(texts)


def test_chunking_parses_conll_and_asks_the_chunk_type():
    first = _conll("conll2000/test.txt")[0]  # Rockwell International Corp. 's Tulsa unit said it signed ...
    assert first["words"][:3] == ["Rockwell", "International", "Corp."]
    assert first["chunks"][:4] == [["NP", 0, 3], ["NP", 3, 6], ["VP", 6, 7], ["NP", 7, 8]]
    sentences = _conll("conll2000/test.txt")
    for q in load_task("neuronllm/chunking", n=100):
        s = sentences[q.meta["record"]]
        phrase = q.stem.split("Highlighted phrase: '")[1][:-1]
        assert q.answer_text in CHUNK_TYPES and set(q.options) <= set(CHUNK_TYPES)
        assert any(k == q.answer_text and " ".join(s["words"][a:b]) == phrase for k, a, b in s["chunks"])


def test_mceval8k_demonstrations_are_disjoint_from_the_question_split():
    ner = load_task("mceval8k/ner")  # upstream train.json contains all of test.json
    assert ner.meta["demo_split"] == "train"
    test = {json.dumps(r, sort_keys=True) for r in data.read_records("mceval8k/linguistic/ner/test.json")}
    train = data.read_records("mceval8k/linguistic/ner/train.json")
    assert all(json.dumps(train[q.meta["record"]], sort_keys=True) not in test for q in ner.demonstrations)
    chunk = load_task("mceval8k/chunking")  # no train.json, valid == test: held-out records
    assert chunk.meta["demo_holdout"] == 50 and len(chunk) == 950
    assert load_task("mceval8k/imdb").meta["demo_split"] == "valid"


def test_unknown_names_and_splits():
    with pytest.raises(TaskError, match="did you mean mceval8k/agnews"):
        load_task("mceval8k/agnew")
    with pytest.raises(TaskError, match="no 'train' split"):
        load_task("mceval8k/imdb", split="train")
    with pytest.raises(TaskError, match="unknown data set"):
        load_examples("gsm9k")


# --------------------------------------------------------------------------- free-form (CNL)

def by_uid(examples):
    return {e.uid: e for e in examples}


def test_free_form_examples():
    for name in EXAMPLE_LOADERS:
        ex = load_examples(name, n=5, seed=2)
        assert ex and all(e.prompt and e.answer and e.uid.startswith(name + "/") for e in ex), name
        assert [e.uid for e in ex] == [e.uid for e in load_examples(name, n=5, seed=2)]
    gsm = by_uid(load_examples("gsm8k"))
    janet = gsm["gsm8k/test/0"]
    assert "Janet" in janet.prompt and janet.answer == "18" and "16 - 3 - 4" in janet.meta["solution"]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", e.answer) for e in gsm.values())  # "2,125" -> "2125"
    assert by_uid(load_examples("metamath"))["metamath/test/0"].answer == "80000"
    assert by_uid(load_examples("emotion"))["emotion/test/0"].answer == "sadness"
    assert {e.answer for e in load_examples("imdb")} == {"good", "bad"}
    assert by_uid(load_examples("imdb"))["imdb/test/0"].answer == "bad"
    code = load_examples("code")
    assert len(code) == 771 and all(ast.parse(e.answer) for e in code[:50])
    cf = next(e for e in load_examples("counterfact", split="valid") if e.meta["case_id"] == 10)
    assert (cf.prompt, cf.answer, cf.meta["target_new"]) == ("BBC One, by", "BBC", "Sega")
    assert next(e for e in load_examples("zsre") if e.meta["subject"] == "UniFirst").answer == "uniform"


def test_relation_data_groups_paraphrases():
    capital = [e for e in load_examples("lre/country_capital_city") if e.meta["subject"] == "Canada"]
    assert {(e.prompt, e.answer) for e in capital} == {("The capital city of Canada is", "Ottawa"),
                                                       ("The capital of Canada is", "Ottawa")}
    p17 = [e for e in load_examples("pararel/P17") if e.meta["subject"] == "Eibenstock"]
    assert p17 and {e.answer for e in p17} == {"Germany"} and len({e.meta["fact"] for e in p17}) == 1
    assert p17[0].prompt == "Eibenstock is located in" and p17[0].meta["pattern"] == 0
    assert len({e.meta["pattern"] for e in p17}) == len(p17)
    facts = {e.meta["fact"] for e in load_examples("pararel/P17", n=7)}
    assert len(facts) == 7  # n counts facts; each brings all its patterns


# --------------------------------------------------------------------------- generators (CNL §4.1)

def test_decoupling_pairs_deterministic():
    pairs = decoupling_pairs(200, seed=5)
    assert pairs == decoupling_pairs(200, seed=5) and pairs != decoupling_pairs(200, seed=6)
    assert len(pairs) == 400 and len({p.expr for p in pairs}) == 200
    assert {p.expr[[c in "+-*" for c in p.expr].index(True)] for p in pairs} == {"+", "-", "*"}
    for answer, code in zip(pairs[::2], pairs[1::2]):
        assert answer.pair_id == code.pair_id and answer.expr == code.expr
        assert (answer.kind, code.kind) == ("answer", "code")
        assert answer.prompt == f"Give the correct answer to {answer.expr}=?"
        assert code.prompt == f"Write Python code that computes {code.expr}."
        assert int(answer.answer) == eval(answer.expr) and code.answer == f"print({code.expr})"
    assert len(decoupling_pairs()) == 2000


def test_mceval8k_composition_counts_records_and_overlap():
    """Counts against the files read directly (paws: train holds the whole test set; imdb has no train)."""
    import json
    from neuronloc.data import path
    from neuronloc.tasks.loaders import mceval8k_composition
    rows = {r["task"]: r for r in mceval8k_composition(["paws", "imdb"])}
    files = {s: json.loads(path(f"mceval8k/nli/paws/{s}.json").read_text()) for s in ("train", "test")}
    assert rows["paws"]["train"] == len(files["train"]) and rows["paws"]["test"] == len(files["test"])
    train = {json.dumps(r, sort_keys=True) for r in files["train"]}
    assert rows["paws"]["test in train"] == sum(json.dumps(r, sort_keys=True) in train for r in files["test"])
    assert rows["paws"]["options"] == 2 and 0.5 <= rows["paws"]["largest answer share"] < 1
    assert rows["imdb"]["train"] == 0 and rows["imdb"]["test in train"] == 0
