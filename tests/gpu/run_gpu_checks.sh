#!/usr/bin/env bash
# Chapter 07 on a machine with an NVIDIA GPU, in under 5 minutes. Run from anywhere:
#
#     bash tests/gpu/run_gpu_checks.sh            # writes into build/gpu/ (or $GPU_OUT)
#
# 1. the gpu-marked tests (pytest -m gpu; they skip without CUDA, here they must run);
# 2. tests/gpu/gpu_report.py: bitsandbytes' CUDA NF4 path vs our NumPy (packed bytes
#    identical? dequantisation max diff) and the CUDA memory of full FT vs LoRA vs QLoRA
#    (torch.cuda.max_memory_allocated), also written to $GPU_OUT/ch07_gpu.json;
# 3. tests/gpu/nf4_cuda_ties.py: the nibbles where bnb's CUDA quantiser and ours differ (values
#    within a few float32 ulps of a midpoint), over 45 tensors -> $GPU_OUT/nf4_cuda_ties.json;
# 4. chapter 07 executed on CUDA, into a copy ($GPU_OUT/07_qlora_cuda.ipynb; its figures go
#    to $GPU_OUT/figures), never in place;
# 5. tests/gpu/recipe_report.py: chapter 10's QLoRA recipe (BitsAndBytesConfig, peft, paged
#    8-bit AdamW) in bf16 on CUDA, cross-checked against our NumPy decoder, peak memory with
#    and without gradient checkpointing -> $GPU_OUT/ch10_gpu.json (about a minute).
# To record the numbers in the book: copy $GPU_OUT/ch07_gpu.json to chapters/results/ and
# re-execute the chapter (`make book`); it shows them when that file exists. Likewise
# $GPU_OUT/ch10_gpu.json for chapter 10.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
OUT=${GPU_OUT:-$ROOT/build/gpu}
mkdir -p "$OUT/runtime" "$OUT/figures"
# PY: the Python that has torch with CUDA (default: the project's .venv); GPU_TESTS: the test
# files to run with -m gpu (default: those that hold a gpu mark, so that a machine without the
# book's notebook/HTML tooling can still collect them).
PY=${PY:-$ROOT/.venv/bin/python}
# GPU_STEPS: which of the five steps below to run (default all: "1 2 3 4 5").
GPU_STEPS=" ${GPU_STEPS:-1 2 3 4 5} "
GPU_TESTS=${GPU_TESTS:-$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')}

want() { [[ $GPU_STEPS == *" $1 "* ]]; }
step() { printf '\n== %s (%ds elapsed)\n' "$1" "$SECONDS"; }
fail() { printf '\nrun_gpu_checks.sh: %s\n' "$1" >&2; exit "${2:-1}"; }

if ! command -v "$PY" >/dev/null; then
    step "no .venv: creating it with 'make setup'"
    command -v make >/dev/null || fail "neither .venv nor make found; create .venv with the lock installed"
    make setup || fail "make setup failed"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYDEVD_DISABLE_FILE_VALIDATION=1
export IPYTHONDIR=$OUT/runtime/ipython JUPYTER_CONFIG_DIR=$OUT/runtime/jupyter-config
export JUPYTER_DATA_DIR=$OUT/runtime/jupyter-data MPLCONFIGDIR=$OUT/runtime/matplotlib
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

step "environment"
"$PY" - <<'EOF' || fail "CUDA is not available to torch in .venv (a CPU-only torch build, or no driver); nothing to check" 3
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit(3)
print(f"device: {torch.cuda.get_device_name(0)}")
import bitsandbytes
print(f"bitsandbytes {bitsandbytes.__version__}")
EOF

status=0
if want 1; then
    step "1/5 gpu-marked tests"
    "$PY" -m pytest -p no:cacheprovider -m gpu -q -rs $GPU_TESTS || { status=1; echo "!! gpu tests failed (continuing)"; }
fi

if want 2; then
    step "2/5 bitsandbytes CUDA vs NumPy, CUDA memory ratios"
    "$PY" tests/gpu/gpu_report.py --out "$OUT/ch07_gpu.json" || { status=1; echo "!! gpu_report.py failed (continuing)"; }
fi

if want 3; then
    step "3/5 where bitsandbytes' CUDA NF4 nibbles differ from ours, and why"
    "$PY" tests/gpu/nf4_cuda_ties.py --out "$OUT/nf4_cuda_ties.json" || { status=1; echo "!! nf4_cuda_ties.py failed (continuing)"; }
fi

if ! want 4; then
    :
elif [[ -f chapters/07_qlora.ipynb ]]; then
    step "4/5 chapter 07 on CUDA, executed into a copy"
    cp chapters/07_qlora.ipynb "$OUT/07_qlora_cuda.ipynb"
    PEDAGOGY_FIGURES_DIR=$OUT/figures "$PY" -m nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.record_timing=False \
        "$OUT/07_qlora_cuda.ipynb" || { status=1; echo "!! chapter 07 failed on CUDA"; }
    [[ $status -eq 0 ]] && echo "executed: $OUT/07_qlora_cuda.ipynb"
else
    status=1; echo "!! chapters/07_qlora.ipynb not found"
fi

if want 5; then
    step "5/5 chapter 10: the QLoRA recipe in bf16 on CUDA"
    "$PY" tests/gpu/recipe_report.py --out "$OUT/ch10_gpu.json" || { status=1; echo "!! recipe_report.py failed"; }
fi

step "done"
[[ $status -eq 0 ]] && echo "all GPU checks passed; report: $OUT/ch07_gpu.json" || echo "some GPU checks FAILED (see above)"
exit $status
