# Two commands matter (see README):
#   make run   - set everything up, build the embedded dataset, run the whole pipeline
#   make test  - set everything up, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.asdlib-installed
RUN ?= demo
PRESET ?= demo
DEVICE ?= auto
ARGS ?=

.PHONY: setup run test bench sync clean-run nbval-reference screenshots browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name asdlib --display-name "Python (asdlib)" >/dev/null
	@touch $(STAMP)

# the development run, then the evaluation split with the weights frozen on it, scored with
# the ground truth the synthetic generator writes beside it (real data has none)
run: setup
	$(BIN)/python -m asdlib.pipeline --run $(RUN) --preset $(PRESET) --device $(DEVICE) $(ARGS)
	$(BIN)/python -m asdlib.pipeline --run $(RUN)-eval --preset $(PRESET) --device $(DEVICE) \
		--dataset eval --fusion-config results/$(RUN)/06_fusion/fusion_config.json $(ARGS)
	$(BIN)/python benchmarks/eval_split.py results/$(RUN)-eval

test: setup browser
	$(BIN)/python -m pytest $(ARGS)

# Debian's Chromium and its driver for the explorer's browser check (tests/browser), where
# apt-get can install them; without them that test is skipped and says how to install them.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		[ "$$(id -u)" = 0 ] && { apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		} || echo "chromium not installed: the browser check will be skipped"; }

# Re-take the README's explorer screenshots from results/demo (needs chromium).
screenshots: setup browser
	ASDLIB_EXPLORE_RUN=results/demo ASDLIB_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -p no:cacheprovider tests/browser -k jupyterlab

bench: setup
	$(BIN)/python benchmarks/bench_encoder.py
	$(BIN)/python benchmarks/bench_branches.py

# Re-pair every notebook: the percent-format .py is the source, the .ipynb follows it.
sync: setup
	$(BIN)/jupytext --sync notebooks/*.py

clean-run:
	rm -rf results/$(RUN)

# Rewrite the reference notebooks from a fresh tiny run (a reviewed change of numbers).
nbval-reference: setup
	rm -rf results/tiny-ci
	$(BIN)/python -m asdlib.pipeline --run tiny-ci --preset tiny
	$(BIN)/python -c "from asdlib import experiment, notebook_check as n; n.export_reference('results/tiny-ci', 'tests/nbval_reference', experiment.STEPS[:-1])"
