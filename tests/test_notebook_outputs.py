"""No fragile numbers in what nbval compares.

`make test` re-runs the committed notebooks and compares their outputs as text (after
scripts/nbval_sanitize.cfg). Floating-point results differ in the last bits across CPUs and
thread counts (~1e-6 relative, up to 1e-5 after many layers), so a number printed with 4
significant digits flips now and then (IG 0.2857 vs 0.2858 on another x86 machine). The rule
(README, "Print results rounded"): a compared decimal number shows at most 2 significant digits,
e.g. through `neuronloc.report.rounded`. Exact values in unit tests use tolerances instead.
Integers (counts, layer and neuron ids) are exact and not limited.
"""
from __future__ import annotations

import configparser
import html
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_DIGITS = 2
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")
IGNORED = {"nbval-ignore-output", "nbval-skip"}


def significant_digits(number: str) -> int:
    """Digits a printed decimal number claims: 0.2857 -> 4, 0.980 -> 2, 13.0 -> 2, 1.5e-05 -> 2."""
    mantissa = re.split(r"[eE]", number.lstrip("+-"))[0]
    digits = mantissa.replace(".", "").lstrip("0")
    if "." in mantissa:
        digits = digits.rstrip("0")  # trailing zeros of a decimal are padding (pandas aligns columns)
    return len(digits)


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "scripts" / "nbval_sanitize.cfg", encoding="utf-8")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def compared_texts(path: Path):
    """(cell number, text) of every output nbval compares, sanitised as nbval does."""
    sanitizers = _sanitizers()
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code" or IGNORED & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            texts = [out["text"]] if "text" in out else []
            for mime in ("text/plain", "text/html"):
                if mime in out.get("data", {}):
                    texts.append(out["data"][mime])
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                if "<" in text:
                    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
                for regex, replace in sanitizers:
                    text = regex.sub(replace, text)
                yield i, text


def test_significant_digits():
    assert [significant_digits(n) for n in ("0.2857", "0.980", "13.0", "-8.9", "0.016", "1.5e-05", "100.")] == \
        [4, 2, 2, 2, 2, 2, 1]
    assert NUMBER.findall("torch.float32 v2.13.0 n=46080 p=0.98 x=-1.5e-05 (13.0)") == ["0.98", "-1.5e-05", "13.0"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_numbers_cannot_flip(path):
    fragile = [(i, n) for i, text in compared_texts(path) for n in NUMBER.findall(text)
               if significant_digits(n) > MAX_DIGITS]
    assert not fragile, (
        f"{path.name}: nbval compares numbers printed with more than {MAX_DIGITS} significant digits, which "
        f"last-bit differences between CPUs can flip: {fragile[:8]} (cell, number). Print them through "
        f"neuronloc.report.rounded (README, 'Print results rounded') and run `make update-notebooks`."
    )
