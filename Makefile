# 西游 Roleplay. Two commands on a fresh machine:
#   make run    set up the app environment and start the hub (offline canon mode on the shared novel)
#   make test   set up every environment the tests need, lint, and run the whole test suite
#   make retrain-demo   the maintainer's loop on CPU with a tiny model (after make test; OUT=dir)
#
# Environments (each installs torch==2.13.0 first, so no CUDA build is pulled on a CPU machine):
#   .venv              app + tests        requirements.txt + requirements-dev.txt
#   .venv-train        XTuner training    requirements-train.txt          (pipeline.train; tests of it)
#   .venv-testserver   `transformers serve`, an OpenAI-compatible server on CPU for tests of client code
#   .venv-proxy        LMDeploy's proxy alone (lmdeploy --no-deps), for the real test of `pipeline.serve --proxy`

PYTHON ?= python3.11
TORCH  := torch==2.13.0
PIP_FLAGS ?= -q --disable-pip-version-check

VENV       := .venv
VENV_TRAIN := .venv-train
VENV_SERVE := .venv-testserver
VENV_PROXY := .venv-proxy

export XIYOU_NOVEL ?= $(abspath ../shared/data/xiyouji.txt)
# the suite runs on this many pytest-xdist workers; PYTEST_WORKERS=0: one process. The machines here have 2 cores.
# A third worker is ~15% faster (the tests wait about as long as they compute) but loads the browser tests enough
# that a page can miss its timeout (one fresh-clone run): 3 is for a machine with more cores.
PYTEST_WORKERS ?= 2
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test setup setup-train setup-testserver setup-proxy system-deps lint pytest clean retrain-demo

run: setup
	$(VENV)/bin/streamlit run hub/app.py --server.address $(HOST) --server.port $(PORT)

test: setup setup-train setup-testserver setup-proxy system-deps lint pytest

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) $(TORCH)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

setup-train: $(VENV_TRAIN)/.installed
# XTuner and mmengine go in with --no-deps (their real needs are pinned in requirements-train.txt; see there why).
$(VENV_TRAIN)/.installed: requirements.txt requirements-train.txt requirements-train-nodeps.txt pyproject.toml
	test -x $(VENV_TRAIN)/bin/python || $(PYTHON) -m venv $(VENV_TRAIN)
	$(VENV_TRAIN)/bin/pip install $(PIP_FLAGS) $(TORCH)
	$(VENV_TRAIN)/bin/pip install $(PIP_FLAGS) -r requirements-train.txt
	$(VENV_TRAIN)/bin/pip install $(PIP_FLAGS) --no-deps -r requirements-train-nodeps.txt
	$(VENV_TRAIN)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	$(VENV_TRAIN)/bin/python -m pipeline.train --check-env
	touch $@

setup-testserver: $(VENV_SERVE)/.installed
$(VENV_SERVE)/.installed: requirements-testserver.txt
	test -x $(VENV_SERVE)/bin/python || $(PYTHON) -m venv $(VENV_SERVE)
	$(VENV_SERVE)/bin/pip install $(PIP_FLAGS) $(TORCH)
	$(VENV_SERVE)/bin/pip install $(PIP_FLAGS) -r requirements-testserver.txt
	touch $@

setup-proxy: $(VENV_PROXY)/.installed
# LMDeploy's proxy alone (no GPU needed), for the real test of `pipeline.serve --proxy`; see requirements-proxy.txt.
$(VENV_PROXY)/.installed: requirements-proxy.txt requirements-proxy-nodeps.txt
	test -x $(VENV_PROXY)/bin/python || $(PYTHON) -m venv $(VENV_PROXY)
	$(VENV_PROXY)/bin/pip install $(PIP_FLAGS) $(TORCH)
	$(VENV_PROXY)/bin/pip install $(PIP_FLAGS) -r requirements-proxy.txt
	$(VENV_PROXY)/bin/pip install $(PIP_FLAGS) --no-deps -r requirements-proxy-nodeps.txt
	$(VENV_PROXY)/bin/lmdeploy serve proxy --help >/dev/null
	touch $@

# Debian packages for the browser tests: Chromium (driven by Playwright), emoji and CJK fonts for screenshots.
system-deps:
	@if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi 'Noto Sans CJK' \
	    || ! fc-list 2>/dev/null | grep -qi 'Noto Color Emoji'; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji fonts-noto-cjk >/dev/null; \
	fi

lint: setup
	$(VENV)/bin/ruff check .

# the repo's modules are compiled once, not in every process the suite starts (some machines set
# PYTHONDONTWRITEBYTECODE: each worker, server and pipeline step then recompiled them)
pytest: setup
	env -u PYTHONDONTWRITEBYTECODE \
	XIYOU_TRAIN_PYTHON=$(abspath $(VENV_TRAIN))/bin/python \
	XIYOU_TESTSERVER_BIN=$(abspath $(VENV_SERVE))/bin/transformers \
	XIYOU_LMDEPLOY_PROXY=$(abspath $(VENV_PROXY))/bin/lmdeploy \
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi; exit $$rc

# The maintainer's whole loop on a CPU with a tiny model (docs/maintainers.md): the data steps against a local
# `transformers serve`, build_dataset, train + merge, eval of base vs fine-tuned. OUT=dir (default runs/retrain-demo).
OUT ?= runs/retrain-demo
retrain-demo: setup setup-train setup-testserver
	XIYOU_TRAIN_PYTHON=$(abspath $(VENV_TRAIN))/bin/python \
	XIYOU_TESTSERVER_BIN=$(abspath $(VENV_SERVE))/bin/transformers \
	$(VENV)/bin/python -m pipeline.retrain_demo --out $(OUT)

clean:
	rm -rf $(VENV) $(VENV_TRAIN) $(VENV_SERVE) $(VENV_PROXY) .pytest_cache .ruff_cache build *.egg-info
