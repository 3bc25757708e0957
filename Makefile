# PEFT from scratch: `make book` and `make test` are the two commands (see README.md).
# Every target that runs code first runs `setup`, which creates .venv and installs the
# locked versions once; after that it is instant until pyproject.toml or the lock change.

PYTHON   ?= python3.11
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
LOCK     := .ci/requirements-lock.txt
# torch goes in first and alone, so the CPU build is used where one is on hand and
# nothing that depends on torch pulls another build; the pin comes from the lock.
TORCH_PIN := $(shell grep -E '^torch==' $(LOCK))
TORCH_PIP_ARGS ?=
PIP_PIN   := pip==26.3
LAB_PIN   := jupyterlab==4.6.6

JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
CHAPTERS    := $(sort $(wildcard chapters/[0-9]*.ipynb))
STUDENT_DIR := student

# Jupyter, IPython and matplotlib write settings and caches under $HOME; keep them in
# build/ instead.  MPLBACKEND is deliberately not set: it hides figures in notebooks.
RUNTIME := $(CURDIR)/build/runtime
TOOL_ENV := IPYTHONDIR=$(RUNTIME)/ipython JUPYTER_CONFIG_DIR=$(RUNTIME)/jupyter-config \
	JUPYTER_DATA_DIR=$(RUNTIME)/jupyter-data MPLCONFIGDIR=$(RUNTIME)/matplotlib \
	PYDEVD_DISABLE_FILE_VALIDATION=1 PYTHONPATH=$(CURDIR)
# One thread per process: chapters run two at a time and the outputs nbval compares were
# produced under the same setting.  Nothing is ever downloaded.
RUN_ENV := $(TOOL_ENV) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

NBCONVERT := $(PY) -m jupyter nbconvert --to notebook

.PHONY: help setup book test figures student student-copies lab bench sweeps compare pretrain clean
.DEFAULT_GOAL := help

help:
	@echo "make book     set up, execute every chapter in place, regenerate figures/"
	@echo "make test     set up, run the library tests and every chapter under nbval"
	@echo "make figures  regenerate figures/ (python -m pedagogy_lib.figures)"
	@echo "make student  copies of the chapters without solution cells, in $(STUDENT_DIR)/"
	@echo "make lab      install JupyterLab into .venv if missing, then start it"
	@echo "make bench    the benchmarks in tests/bench/ + every chapter timed -> chapters/results/bench_summary.json"
	@echo "make sweeps   rerun the chapters' long experiments (tests/bench/sweep_*.py, slow)"
	@echo "make compare  chapter 08: every method, 3 seeds (writes chapters/results/ch08_compare.json)"
	@echo "make pretrain chapter 09: corpus, BPE and the decoder family -> pedagogy_lib/checkpoints/ (~15 min)"
	@echo "make clean    remove build/, $(STUDENT_DIR)/ and caches (keeps .venv)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(PY)
	@$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else \
		"$(VENV) has Python %d.%d; the lock is for 3.11: rm -rf $(VENV), then make PYTHON=/path/to/python3.11" % v)'
	$(PY) -m pip install --quiet $(PIP_PIN)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH_PIN)
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(STAMP)

book: setup
	@mkdir -p $(RUNTIME)
	$(if $(CHAPTERS),$(RUN_ENV) $(NBCONVERT) --execute --inplace --ExecutePreprocessor.record_timing=False $(CHAPTERS),@echo "no chapters to execute yet")
	$(if $(CHAPTERS),$(TOOL_ENV) $(NBCONVERT) --inplace --CoalesceStreamsPreprocessor.enabled=True $(CHAPTERS),)
	$(MAKE) --no-print-directory figures

test: setup
	@mkdir -p $(RUNTIME)
	$(RUN_ENV) $(PY) -m pytest -n 2 --dist loadfile --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(CHAPTERS) tests/

figures: setup
	@mkdir -p $(RUNTIME)
	$(RUN_ENV) $(PY) -m pedagogy_lib.figures

student: setup
	@$(MAKE) --no-print-directory student-copies

# The nbconvert call itself, without set-up; tests/test_plumbing.py runs it on a tiny notebook.
student-copies:
	@mkdir -p $(RUNTIME)
	$(if $(CHAPTERS),$(TOOL_ENV) $(NBCONVERT) --TagRemovePreprocessor.enabled=True \
		--TagRemovePreprocessor.remove_cell_tags=solution --ClearOutputPreprocessor.enabled=True \
		--output-dir $(STUDENT_DIR) $(CHAPTERS),@echo "no chapters to copy yet")

lab: setup
	@$(PY) -c 'import jupyterlab' 2>/dev/null || $(PY) -m pip install --quiet $(LAB_PIN) -c $(LOCK)
	$(PY) -m jupyter lab

sweeps: setup
	@set -e; for f in $(sort $(wildcard tests/bench/sweep_*.py)); do \
		echo "== $$f"; $(RUN_ENV) $(PY) $$f; done

compare: setup
	$(RUN_ENV) $(PY) -m pedagogy_lib.compare --jobs $(JOBS)

# Each benchmark writes its ratios under chapters/results/; then every chapter is executed
# (one at a time) and timed, and all of it is summarised in chapters/results/bench_summary.json.
bench: setup
	@mkdir -p $(RUNTIME)
	@set -e; for f in $(sort $(wildcard tests/bench/bench_*.py)); do \
		echo "== $$f"; $(RUN_ENV) $(PY) $$f; done
	$(RUN_ENV) $(PY) -m pedagogy_lib.benchmarks

# Chapter 09's decoder family, one process per model on one thread each (deterministic).
pretrain: setup
	$(RUN_ENV) nice $(PY) -m pedagogy_lib.torch_ref.pretrain

clean:
	rm -rf build $(STUDENT_DIR) .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
