# PEFT from scratch: `make book` and `make test` are the two commands (see README.md).
# Every target that runs code first runs `setup`, which creates .venv and installs the
# locked versions once; after that it is instant until pyproject.toml or the lock change.

PYTHON   ?= python3.11
# The oldest Python the lock installs on: soupsieve (pulled in by nbconvert/beautifulsoup4)
# declares Requires-Python >=3.11.5.  tests/test_setup.py recomputes it from the installed
# packages' metadata, so a lock refresh that raises it fails there.
PYTHON_FLOOR := 3.11.5
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
LOCK     := .ci/requirements-lock.txt
# JupyterLab and what it needs on top of the lock, for `make lab` only (it slows every
# Jupyter tool, so the test environment stays without it).
LAB_LOCK := .ci/requirements-lab-lock.txt
# torch goes in first and alone, so the CPU build is used where one is on hand and
# nothing that depends on torch pulls another build; the pin comes from the lock.
TORCH_PIN := $(shell grep -E '^torch==' $(LOCK))
TORCH_PIP_ARGS ?=
PIP_PIN   := pip==26.3
LAB_PORT ?= 8888
LAB_ARGS ?=
# JupyterLab refuses to start as root (containers, JupyterHub images) without this.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
CHAPTERS    := $(sort $(wildcard chapters/[0-9]*.ipynb))
STUDENT_DIR := student
# The rendered book: sources staged in build/html-src/EDITION, site in build/html/EDITION.
EDITION     ?= teacher
HTML_SRC    := build/html-src/$(EDITION)
HTML_OUT    := build/html/$(EDITION)
HTML_DOCTREES := build/html-doctrees/$(EDITION)
# The browser check in `make test` (tests/test_html.py) needs a headless Chromium.  As root
# with apt-get (Debian/Ubuntu, CI) `make test` installs chromium-headless-shell when none is
# found; BROWSER_INSTALL=no turns that off.  Without a browser the check is skipped, loudly.
BROWSER_INSTALL ?= yes
BROWSERS := chromium-headless-shell chromium chromium-browser google-chrome chrome-headless-shell
BOOK_FILES  := chapters/_config.yml chapters/intro.md chapters/bibliography.md chapters/references.bib

# Jupyter, IPython and matplotlib write settings and caches under $HOME; keep them in
# build/ instead.  MPLBACKEND is deliberately not set: it hides figures in notebooks.
RUNTIME := $(CURDIR)/build/runtime
TOOL_ENV := IPYTHONDIR=$(RUNTIME)/ipython JUPYTER_CONFIG_DIR=$(RUNTIME)/jupyter-config \
	JUPYTER_DATA_DIR=$(RUNTIME)/jupyter-data JUPYTER_RUNTIME_DIR=$(RUNTIME)/jupyter-runtime \
	MPLCONFIGDIR=$(RUNTIME)/matplotlib PYDEVD_DISABLE_FILE_VALIDATION=1 PYTHONPATH=$(CURDIR)
# One thread per process: chapters run two at a time and the outputs nbval compares were
# produced under the same setting.  Nothing is ever downloaded.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN_ENV := $(TOOL_ENV) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(OFFLINE)

NBCONVERT := $(PY) -m jupyter nbconvert --to notebook

.PHONY: help setup book test browser figures student student-copies lab html html-student \
	html-site bench sweeps compare pretrain distributed-gpu clean
.DEFAULT_GOAL := help

help:
	@echo "make setup         create $(VENV) with $(PYTHON) (Python 3.11, >= $(PYTHON_FLOOR)) and install the locked versions"
	@echo "make book          set up, execute every chapter in place, regenerate figures/"
	@echo "make test          set up, run the library tests and every chapter under nbval, and the html check"
	@echo "                   in a headless Chromium (as root with apt-get it installs chromium-headless-shell)"
	@echo "make html          the book as a static web site (stored outputs, nothing executed) in build/html/teacher/"
	@echo "make html-student  the same without solution cells, in build/html/student/"
	@echo "make figures       redraw figures/ from the stored results (python -m pedagogy_lib.book)"
	@echo "make student       copies of the chapters without solution cells, in $(STUDENT_DIR)/"
	@echo "make lab           install JupyterLab (locked) into $(VENV) if missing, then start it;"
	@echo "                   LAB_PORT=$(LAB_PORT), LAB_ARGS='...' pass options to jupyter lab"
	@echo "make bench         the benchmarks in tests/bench/ + every chapter timed -> chapters/results/bench_summary.json"
	@echo "make sweeps        rerun the chapters' long experiments (python -m pedagogy_lib.book.chNN.experiment, slow)"
	@echo "make distributed-gpu  chapter 11's DDP/FSDP2 run with NCCL on NGPUS=$(NGPUS) GPUs (torchrun; DIST_ARGS='--task fsdp --method full')"
	@echo "make compare       chapter 08: every registry method + LoRA all-linear, rates bracketed on 2 seeds, 5 seeds (writes chapters/results/ch08_compare.json)"
	@echo "make pretrain      chapter 09: corpus, BPE and the decoder family -> pedagogy_lib/checkpoints/ (≈ 15 min on 2 free cores)"
	@echo "make browser       install a headless Chromium for the html check if none is found (root + apt-get only)"
	@echo "make clean         remove build/, $(STUDENT_DIR)/ and caches (keeps $(VENV))"
	@echo "variables: PYTHON=/path/to/python3.11  TORCH_PIP_ARGS='--index-url ...'  JOBS=N"

# Set-up, in one shell so that a failure anywhere removes the half-built $(VENV) (only a
# directory with a pyvenv.cfg, i.e. a virtual environment, is ever removed).  The
# interpreter is checked before anything is created or downloaded.
PY_VERSION := -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
FLOOR_PATCH := $(word 3,$(subst ., ,$(PYTHON_FLOOR)))
# $(call python_ok,INTERPRETER): true when it runs and is 3.11.x with x >= the floor's x.
python_ok = v=$$($(1) $(PY_VERSION) 2>/dev/null) && case "$$v" in 3.11.*) [ "$${v\#3.11.}" -ge $(FLOOR_PATCH) ];; *) false;; esac
PYTHON_HINT := install Python 3.11 at $(PYTHON_FLOOR) or newer (python.org, your package manager, \
	`pyenv install 3.11`, `uv python install 3.11` or conda), then run: make PYTHON=/path/to/python3.11 setup

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
		echo "error: the Python interpreter '$(PYTHON)' was not found." >&2; \
		echo "       $(PYTHON_HINT)" >&2; exit 1; }
	@$(call python_ok,$(PYTHON)) || { \
		echo "error: '$(PYTHON)' is Python $${v:-(it did not run)}; the locked packages need Python 3.11 >= $(PYTHON_FLOOR)" >&2; \
		echo "       (soupsieve, required through nbconvert, declares Requires-Python >=$(PYTHON_FLOOR))." >&2; \
		echo "       $(PYTHON_HINT)" >&2; exit 1; }
	@if [ -e $(VENV) ] && ! { $(call python_ok,$(PY)); }; then \
		echo "== $(VENV) exists but its Python ($${v:-broken}) is not 3.11 >= $(PYTHON_FLOOR): removing it"; \
		if [ -f $(VENV)/pyvenv.cfg ]; then rm -rf $(VENV); \
		else echo "error: $(VENV) is not a virtual environment; move it away" >&2; exit 1; fi; fi
	@set -e; trap 'st=$$?; if [ $$st -ne 0 ]; then \
		echo "error: set-up failed (exit $$st); removing the half-built $(VENV) so the next run starts clean" >&2; \
		[ ! -f $(VENV)/pyvenv.cfg ] || rm -rf $(VENV); fi' EXIT; \
	rm -f $(STAMP); \
	if [ ! -x $(PY) ]; then echo "== [1/5] creating $(VENV) with $$(command -v $(PYTHON))"; $(PYTHON) -m venv $(VENV); fi; \
	echo "== [2/5] $(PIP_PIN)"; \
	$(PY) -m pip install --progress-bar on $(PIP_PIN); \
	echo "== [3/5] $(TORCH_PIN) (the largest download: about 200 MB CPU build, more with CUDA)"; \
	$(PY) -m pip install --progress-bar on $(TORCH_PIP_ARGS) $(TORCH_PIN); \
	echo "== [4/5] the rest of $(LOCK)"; \
	$(PY) -m pip install --progress-bar on -r $(LOCK); \
	echo "== [5/5] pedagogy_lib (editable)"; \
	$(PY) -m pip install --no-deps -e .; \
	touch $(STAMP); echo "== set-up done: $(VENV)"

setup: $(STAMP)

book: setup
	@mkdir -p $(RUNTIME)
	$(if $(CHAPTERS),$(RUN_ENV) $(NBCONVERT) --execute --inplace --ExecutePreprocessor.record_timing=False $(CHAPTERS),@echo "no chapters to execute yet")
	$(if $(CHAPTERS),$(TOOL_ENV) $(NBCONVERT) --inplace --CoalesceStreamsPreprocessor.enabled=True $(CHAPTERS),)
	$(MAKE) --no-print-directory figures

test: setup browser
	@mkdir -p $(RUNTIME)
	$(RUN_ENV) $(PY) -m pytest -n 2 --dist loadfile -rs --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(CHAPTERS) tests/

browser:
	@found=; for b in $${CHROMIUM:-} $(BROWSERS); do command -v $$b >/dev/null 2>&1 && { found=$$b; break; }; done; \
	if [ -n "$$found" ]; then :; \
	elif [ "$(BROWSER_INSTALL)" != no ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== installing chromium-headless-shell with apt-get for the html check (BROWSER_INSTALL=no to skip)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell; } \
		|| echo "WARNING: could not install chromium-headless-shell: the html browser check will be SKIPPED" >&2; \
	else \
		echo "WARNING: no headless Chromium ($(BROWSERS)) and no way to install one (needs root and apt-get):" >&2; \
		echo "WARNING: the html browser check in make test will be SKIPPED. Install one, or set CHROMIUM=/path/to/it." >&2; \
	fi

figures: setup
	@mkdir -p $(RUNTIME)
	$(RUN_ENV) $(PY) -m pedagogy_lib.book

student: setup
	@$(MAKE) --no-print-directory student-copies

# The nbconvert call itself, without set-up; tests/test_plumbing.py runs it on a tiny notebook.
student-copies:
	@mkdir -p $(RUNTIME)
	$(if $(CHAPTERS),$(TOOL_ENV) $(NBCONVERT) --TagRemovePreprocessor.enabled=True \
		--TagRemovePreprocessor.remove_cell_tags=solution --ClearOutputPreprocessor.enabled=True \
		--output-dir $(STUDENT_DIR) $(CHAPTERS),@echo "no chapters to copy yet")

# JupyterLab's own dependencies come from $(LAB_LOCK), the rest stays at the lock.  Its
# settings, workspaces and runtime files go under build/runtime like the other targets'.
lab: setup
	@mkdir -p $(RUNTIME)
	@$(PY) -c 'import jupyterlab' 2>/dev/null || { echo "== installing JupyterLab from $(LAB_LOCK)"; \
		$(PY) -m pip install -r $(LAB_LOCK) -c $(LOCK); }
	$(TOOL_ENV) $(OFFLINE) $(PY) -m jupyter lab $(ALLOW_ROOT) --port=$(LAB_PORT) $(LAB_ARGS)

# The rendered book (jupyter-book 1, Sphinx): the chapters as executed and committed, never
# run again here.  `html-site` is the build itself, without set-up (tests/test_html.py runs
# it); EDITION=student stages copies without `solution` cells, EDITION=teacher keeps them
# behind a toggle (chapters/_config.yml).  The table of contents is every chapter in order.
html: setup
	@$(MAKE) --no-print-directory html-site EDITION=teacher

html-student: setup
	@$(MAKE) --no-print-directory html-site EDITION=student

html-site:
	@test -n "$(CHAPTERS)" || { echo "error: no chapters to render" >&2; exit 1; }
	@rm -rf $(HTML_SRC) $(HTML_OUT) && mkdir -p $(HTML_SRC) $(RUNTIME)
	@cp $(BOOK_FILES) $(HTML_SRC)/
	@{ echo "format: jb-book"; echo "root: intro"; echo "chapters:"; \
	  for f in $(notdir $(basename $(CHAPTERS))) bibliography; do echo "  - file: $$f"; done; } > $(HTML_SRC)/_toc.yml
	@$(if $(filter student,$(EDITION)),$(TOOL_ENV) $(NBCONVERT) --log-level=WARN --TagRemovePreprocessor.enabled=True \
		--TagRemovePreprocessor.remove_cell_tags=solution --output-dir $(HTML_SRC) $(CHAPTERS),cp $(CHAPTERS) $(HTML_SRC)/)
	@$(TOOL_ENV) $(PY) -c 'import sys; from jupyter_book.cli.main import main; main(sys.argv[1:])' \
		config sphinx $(HTML_SRC) >/dev/null
	$(TOOL_ENV) $(PY) -m sphinx -b html -q -W --keep-going $(HTML_SRC) $(HTML_OUT) -d $(HTML_DOCTREES)
	@echo "== the $(EDITION) book: $(HTML_OUT)/index.html"

# One experiment per chapter room (chapter 08's is `make compare`); each writes its results
# under chapters/results/, which the chapters and `make figures` then only read.
# Chapter 08's experiment is `make compare`, so it is left out here.
SWEEPS := $(filter-out ch08,$(sort $(patsubst pedagogy_lib/book/%/experiment.py,%,$(wildcard pedagogy_lib/book/ch[0-9][0-9]/experiment.py))))

sweeps: setup
	@set -e; for ch in $(SWEEPS); do \
		echo "== pedagogy_lib.book.$$ch.experiment"; $(RUN_ENV) $(PY) -m pedagogy_lib.book.$$ch.experiment; done

compare: setup
	$(RUN_ENV) $(PY) -m pedagogy_lib.book.ch08.experiment --jobs $(JOBS)

# Chapter 11's two-process runs on real GPUs with NCCL (never needed for the book or its tests):
# one torchrun rank per GPU, DDP or FSDP2 over the chapter-09 decoder with peft; rank 0 prints JSON.
NGPUS ?= 2
DIST_ARGS ?= --task ddp --method lora
distributed-gpu: setup
	$(OFFLINE) $(VENV)/bin/torchrun --standalone --nproc_per_node $(NGPUS) -m pedagogy_lib.distributed \
		--backend nccl $(DIST_ARGS)

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
