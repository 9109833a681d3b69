"""No result number typed into a notebook's prose (issue 19 item 6).

A markdown cell is the same text in every run (smoke, default, paper, any model), so a result
it states was typed from some earlier run. Results are rendered from the run instead (each
`experiments/<nb>.py` has `conclusions(...)`, shown in an executed cell). What markdown may
hold: the question and the design. The rule checked here, for every decimal number or
percentage of a markdown cell (code spans and LaTeX removed):

  - a design value: a field of the scale presets or the method configs, a number of a
    pre-registered rule (`neuronloc/rules`), the 95 % of every interval, the collapse and
    completeness thresholds of the library; or
  - a paper's value, in a paragraph that names where it comes from (the paper, a table,
    figure, section or equation, CLAIMS.md): the number is printed in ../shared/papers or
    ../shared/docs/CLAIMS.md (compared as numbers: 0.016 is CLAIMS.md's 1.6e-2).

A number typed from a run fails both ("on the embedded model ... from 0.98 to 0.55": no
source named, and not a design value).
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import pytest

from neuronloc import configs, scales

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:[eE][-−]?\d+)?")
DECIMAL = re.compile(r"(?<![\w.])[−-]?(?:\d{1,3}(?:,\d{3})+|\d+)?\.\d+(?:\s?%)?(?!\w|\.\d)|(?<![\w.])[−-]?\d+(?:\.\d+)?\s?%")
SOURCE = re.compile(r"paper|Paper|\bTab(?:le|\.)|\bFig(?:ure|\.)|§|\bEq\.|\bApp(?:endix|\.)|CLAIMS\.md|NeuronLLM|CNL|NEG\b|"
                    r"ROME|\bKN\b|Dai et al|Meng et al|Elazar|default|README")


def _paragraphs(text: str):
    """Paragraphs (and list items, table rows) of a markdown cell, with code spans, LaTeX and
    link targets removed."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    for block in re.split(r"\n\s*\n", text):
        yield from re.split(r"\n(?=\s*(?:[-*|]|\d+\.)\s)", block)


def _numbers(value):
    """Every number of a (nested) dataclass / tuple / dict of design values."""
    if is_dataclass(value):
        for f in fields(value):
            yield from _numbers(getattr(value, f.name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def value(number: str) -> float:
    """A printed number as a comparable value: "−1,600.50 %" -> 1600.5 (sign dropped: the text says it)."""
    return round(abs(float(number.replace("−", "-").replace("%", "").replace(",", "").strip())), 9)


def design_values() -> set[float]:
    """Every number the design fixes: presets, configs, rules, and the library's thresholds (x 100 as percentages)."""
    from neuronloc import claims, metrics
    from neuronloc.attribution.ig import check_completeness
    found = [*_numbers([scales.SMOKE, scales.DEFAULT, scales.PAPER]), *_numbers([c() for c in configs.CONFIGS.values()]),
             *_numbers([configs.RomeParams(), configs.StudyConfig()]), 0.95,
             inspect.signature(metrics.collapsed).parameters["threshold"].default,
             inspect.signature(check_completeness).parameters["tolerance"].default]
    for rule in claims.rules().values():
        found += [v for k in ("threshold", "sesoi", "effect", "tolerance") if isinstance(rule.get(k), (int, float))
                  for v in [rule[k]]] + list(rule.get("bounds") or [])
    return {round(abs(x), 9) for v in found for x in (v, 100 * v)}


def paper_values() -> set[float]:
    """Every number printed in the papers and in CLAIMS.md."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((SHARED / "papers").glob("*.txt"))]
    texts.append((SHARED / "docs" / "CLAIMS.md").read_text(encoding="utf-8"))
    return {value(m.group()) for t in texts for m in NUMBER.finditer(t)}


def typed(path: Path, design: set[float], papers: set[float]) -> list[str]:
    """The numbers of the notebook's markdown that are neither design values nor cited paper values."""
    return [f"cell {i}: {n!r} in {s.strip()[:120]!r}" for i, n, s in stated_numbers(path)
            if value(n) not in design and not (SOURCE.search(s) and value(n) in papers)]


def stated_numbers(path: Path):
    """(cell, number, sentence) of every decimal or percentage in the notebook's markdown."""
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for sentence in _paragraphs("".join(cell["source"])):
            for m in DECIMAL.finditer(sentence):
                yield i, m.group(), sentence


@pytest.fixture(scope="module")
def allowed():
    if not (SHARED / "papers").is_dir():
        pytest.fail(f"{SHARED / 'papers'} is missing: the papers sit beside the repository (README, Data)")
    return design_values(), paper_values()


def test_the_check_catches_a_typed_result(allowed, tmp_path):
    """The rule on hand-made cells: a run's number fails, the paper's number with its source passes."""
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["On the embedded model the 150 neurons cut P(answer) from 0.98 to 0.413."]},
        {"cell_type": "markdown", "source": ["The paper finds overlaps of 37.3 % (KN) and 32.7 % (causal tracing)."]},
        {"cell_type": "markdown", "source": ["Our run finds 41.7 % for KN.\n\nThe paper's value is different."]},
        {"cell_type": "markdown", "source": ["Code: `x = 0.123` and $p < 0.05$ are not prose."]},
    ]}
    path = tmp_path / "99_example.ipynb"
    path.write_text(json.dumps(nb))
    assert [b.split(" in ")[0] for b in typed(path, *allowed)] == ["cell 0: '0.98'", "cell 0: '0.413'", "cell 2: '41.7 %'"]
    assert value("−1,600.50 %") == 1600.5 and 0.016 in allowed[1]  # CLAIMS.md prints it as 1.6e-2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_states_no_result_number(path, allowed):
    bad = typed(path, *allowed)
    assert not bad, ("markdown states numbers that are neither a cited paper value nor a design value; render results "
                     "from the run (experiments.<nb>.conclusions) instead:\n" + "\n".join(bad))
