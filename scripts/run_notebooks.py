#!/usr/bin/env python
"""Run the notebooks with papermill (`make reproduce` calls this).

    python scripts/run_notebooks.py [--model M] [--scale S] [--seed N] [--only NN ...] [--out DIR]
    python scripts/run_notebooks.py --update-source [--only NN ...]

Each notebooks/NN_*.ipynb is executed with the parameters MODEL, SCALE, SEED,
RESULTS_DIR (= <out>/<model-slug>/<notebook>/) and FIGURES_DIR
(= <figures>/<model-slug>/) injected after its cell tagged "parameters"; the
executed copy is written to <out>/<model-slug>/<notebook>/<notebook>.ipynb and the
wall time of every notebook to <out>/<model-slug>/timings.json.
<out> is results/ (figures/) for SCALE=default and paper, and results/smoke/
(figures/smoke/) for SCALE=smoke, so a smoke run never overwrites the results a
reader browses.

--update-source re-executes the committed source notebooks as they are (their
parameters cell defaults to SCALE="smoke") and stores the outputs in place, with
papermill's run metadata removed: these outputs are what nbval compares against
in `make test` (README, Development). It first empties the smoke caches
(results/smoke/*/cache): CI runs the notebooks from a fresh clone, in order, with
no cache, and what a cell prints (progress bars, warnings of the scorers that run)
differs when it reads its results from a cache instead.

The kernel is "neuronloc", the kernelspec `make setup` installs into .venv; when it
is missing, "python3". Exit status: 0 all ran, 1 a notebook failed (named), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from neuronloc import scales

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "neuronloc"
DEFAULTS = {"model": "smollm2-135m", "scale": "default", "seed": 0}
SCALES = tuple(scales.SCALES)  # the presets notebooks read (neuronloc.scales)
CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.M)  # a line rewound by \r (what nbval does too)


def usage_error(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"model name, path or HF id (default {DEFAULTS['model']})")
    p.add_argument("--scale", choices=SCALES, help=f"scale preset (default {DEFAULTS['scale']})")
    p.add_argument("--seed", type=int, help=f"random seed (default {DEFAULTS['seed']})")
    p.add_argument("--only", nargs="+", default=[], metavar="NN",
                   help="run only the notebooks whose names start with these prefixes (e.g. 00 03)")
    p.add_argument("--out", type=Path, help="results root (default results/, results/smoke/ for SCALE=smoke)")
    p.add_argument("--figures", type=Path, help="figures root (default figures/, figures/smoke/ for SCALE=smoke)")
    p.add_argument("--kernel", help=f"Jupyter kernel name (default {KERNEL!r} if installed, else 'python3')")
    p.add_argument("--update-source", action="store_true",
                   help="execute the source notebooks with their own defaults and store the outputs in place")
    args = p.parse_args(argv)
    if args.update_source:
        given = [f"--{k}" for k in DEFAULTS if getattr(args, k) is not None]
        if given or args.out or args.figures:
            p.error(f"--update-source runs the notebooks with their own defaults; drop {', '.join(given) or '--out/--figures'}")
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def select(only: list[str]) -> list[Path]:
    """The notebooks to run, in order; each must have a cell tagged "parameters"."""
    import nbformat

    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    unknown = [prefix for prefix in only if not any(p.name.startswith(prefix) for p in paths)]
    if unknown:  # running the others silently would look like a complete run
        usage_error(f"--only {' '.join(unknown)}: no notebook starts with {', '.join(map(repr, unknown))}; "
                    f"notebooks: {', '.join(p.name for p in paths) or 'none'}")
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    if not paths:
        usage_error(f"no notebook in {NOTEBOOKS.relative_to(ROOT)}/ matches {only or 'NN_*.ipynb'}")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
            usage_error(f"{path.relative_to(ROOT)} has no cell tagged 'parameters' (papermill needs one)")
    return paths


def kernel_name(requested: str | None) -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    available = KernelSpecManager().find_kernel_specs()
    if requested:
        if requested not in available:
            usage_error(f"no Jupyter kernel {requested!r}; installed: {', '.join(sorted(available))}")
        return requested
    if KERNEL in available:
        return KERNEL
    print(f"warning: kernel {KERNEL!r} is not installed (`make setup` installs it); using 'python3'", file=sys.stderr)
    return "python3"


def write_json(path: Path, data) -> None:
    """Atomic write with the umask's mode, so an interrupted run never leaves half a file."""
    from neuronloc.store import write_atomic

    write_atomic(path, json.dumps(data, indent=2) + "\n")


def environment() -> dict:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device}


def tidy(path: Path, keep_run_metadata: bool) -> None:
    """Merge consecutive stream outputs and apply their carriage returns, as a
    terminal would (a tqdm bar becomes its final line); for a source notebook also
    drop what papermill records about the run (times, status)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not keep_run_metadata:
        nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        if not keep_run_metadata:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        outputs = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and outputs and outputs[-1].output_type == "stream" \
                    and outputs[-1].name == out.name:
                outputs[-1].text += out.text
            else:
                outputs.append(out)
        for out in outputs:
            if out.output_type == "stream":
                out.text = CARRIAGE_RETURN.sub("", out.text)
        if cell.cell_type == "code":
            cell.outputs = outputs
    nbformat.write(nb, path)


def execute(source: Path, output: Path, parameters: dict | None, kernel: str) -> None:
    import papermill as pm

    pm.execute_notebook(
        str(source), str(output), parameters=parameters, kernel_name=kernel,
        cwd=str(NOTEBOOKS),  # as in Jupyter and nbval: relative paths start at notebooks/
        progress_bar=True, log_output=False, request_save_on_cell_execute=True,
    )


def cache_entries(run_dir: Path) -> int:
    """Entries in the run's score cache (results/<slug>/cache): new ones mean a notebook computed something."""
    cache = run_dir / "cache"
    return sum(1 for _ in cache.glob("*")) if cache.is_dir() else 0


def failure_message(err: Exception) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        return f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    return f"{type(err).__name__}: {err}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("papermill").setLevel(logging.WARNING)
    paths = select(args.only)
    kernel = kernel_name(args.kernel)

    if args.update_source:
        for cache in sorted((ROOT / "results" / "smoke").glob("*/cache")):  # as cold as CI's fresh clone
            print(f"emptying {cache.relative_to(ROOT)} (the references are those of a cold run)", flush=True)
            shutil.rmtree(cache)
        failed = []
        for i, path in enumerate(paths, 1):
            print(f"[{i}/{len(paths)}] {path.name} (source, its own parameters)", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / path.name
                start = time.perf_counter()
                try:
                    execute(path, out, None, kernel)
                except Exception as err:  # noqa: BLE001 - any failure keeps the source as it was
                    failed.append(path.name)
                    print(f"  FAILED {path.name}: {failure_message(err)} (source left unchanged)", flush=True)
                    continue
                tidy(out, keep_run_metadata=False)
                shutil.copyfile(out, path)
            print(f"  ok {time.perf_counter() - start:.1f} s -> {path.relative_to(ROOT)}", flush=True)
        if failed:
            print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0

    from neuronloc.models import slug

    model_slug = slug(args.model)
    smoke = args.scale == "smoke"
    out_root = (args.out or ROOT / "results" / ("smoke" if smoke else "")).resolve()
    figures = (args.figures or ROOT / "figures" / ("smoke" if smoke else "")).resolve() / model_slug
    run_dir = out_root / model_slug
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings.update({"model": args.model, "scale": args.scale, "seed": args.seed, "environment": environment()})
    timings.setdefault("notebooks", {})
    print(f"model {args.model} (slug {model_slug}) scale {args.scale} seed {args.seed} kernel {kernel}: "
          f"{len(paths)} notebook(s) -> {run_dir}", flush=True)

    failed, total = [], time.perf_counter()
    for i, path in enumerate(paths, 1):
        nb_dir = run_dir / path.stem
        nb_dir.mkdir(parents=True, exist_ok=True)
        figures.mkdir(parents=True, exist_ok=True)
        output = nb_dir / path.name
        parameters = {"MODEL": args.model, "SCALE": args.scale, "SEED": args.seed,
                      "RESULTS_DIR": str(nb_dir), "FIGURES_DIR": str(figures)}
        print(f"[{i}/{len(paths)}] {path.name}", flush=True)
        start, cached_before = time.perf_counter(), cache_entries(run_dir)
        status = "ok"
        try:
            execute(path, output, parameters, kernel)
        except Exception as err:  # noqa: BLE001 - report every failing notebook, run the rest
            status = "failed"
            failed.append(path.name)
            print(f"  FAILED {path.name}: {failure_message(err)}\n  the executed copy with the error: {output}",
                  flush=True)
        seconds = time.perf_counter() - start
        written = cache_entries(run_dir) - cached_before
        previous = timings["notebooks"].get(path.stem, {})
        timings["notebooks"][path.stem] = {  # scale and seed per notebook: runs at other scales may share the folder
            "seconds": round(seconds, 1), "status": status, "scale": args.scale, "seed": args.seed,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # 0: every result came from the cache (a replay, much faster than a cold run); the wall time of
            # the last run that computed something is kept beside it
            "cache_entries_written": written,
            "computed_seconds": round(seconds, 1) if written else previous.get("computed_seconds"),
        }
        write_json(timings_path, timings)
        if status == "ok":
            tidy(output, keep_run_metadata=True)
            print(f"  ok {seconds:.1f} s -> {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}",
                  flush=True)

    print(f"{len(paths) - len(failed)}/{len(paths)} notebook(s) ran in {time.perf_counter() - total:.1f} s; "
          f"timings in {timings_path}", flush=True)
    if failed:
        print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
