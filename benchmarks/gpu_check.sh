#!/usr/bin/env bash
# The first GPU run of the Triton rasterizer, in one go (under 8 minutes on an H200):
#
#   benchmarks/gpu_check.sh              on a machine with a CUDA GPU; results in
#                                        benchmarks/results/gpu/ (commit them)
#   benchmarks/gpu_check.sh --dry-run    anywhere (or GSASR_GPU_CHECK_DRY=1): the same steps on
#                                        the CPU at toy sizes, results in a temporary folder;
#                                        checks the script's own plumbing, measures nothing
#
# Steps, each with a time limit, all run even if one fails (exit 1 then):
#   1. static estimates for sm_90 (benchmarks/static_report.py, G = 4 and 16)
#   2. the Triton tests on CUDA, interpreter off (dry: a few, in the interpreter)
#   3. tiled against untiled output of the shipped model (largest difference)
#   4. fp16 / bf16 against fp32 on ../shared/data/val, x4 (PSNR)
#   5. forward / backward kernel times against the PyTorch path and the static estimates
#   6. `gsasr upscale` end to end: 3840x2160 output, 2048x2048 input, x4, peak GPU memory
# Needs a Python with torch (CUDA build) and triton; $PYTHON picks it (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" || "${GSASR_GPU_CHECK_DRY:-0}" == "1" ]]; then DRY=1; fi
PY=${PYTHON:-python}
BUDGET=${GSASR_GPU_CHECK_BUDGET:-450}  # seconds for all steps together
VAL=${GSASR_VAL:-../shared/data/val}
if [[ $DRY == 1 ]]; then
    OUT=${GSASR_GPU_CHECK_OUT:-${TMPDIR:-/tmp}/gsasr-gpu-check-dry}
    DRYFLAG=--dry-run
else
    OUT=${GSASR_GPU_CHECK_OUT:-benchmarks/results/gpu}
    DRYFLAG=
fi
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
START=$SECONDS
FAILED=0

# gsasr_kernels and gsasr_cli importable without installing them.
source scripts/device_pythonpath.sh

{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
    [[ $DRY == 1 ]] && echo && echo "DRY RUN on the CPU: plumbing checked, NOTHING MEASURED."
    echo
    nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
    $PY -c "import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'available', torch.cuda.is_available(), '| triton', triton.__version__)"
    echo
    echo "| step | exit | seconds | output |"
    echo "|---|---|---|---|"
} > "$SUMMARY" 2>&1
if [[ $DRY == 0 ]] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device here: run benchmarks/gpu_check.sh --dry-run" | tee -a "$SUMMARY"
    exit 2
fi

# step NAME LIMIT CMD...: run with a time limit (capped by what is left of the budget),
# output to $OUT/NAME.log, one summary row.
step() {
    local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START)))
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 5)); then
        echo "| $name | skipped: time budget spent | 0 | |" >> "$SUMMARY"; FAILED=1; return
    fi
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS rc
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    ((rc != 0)) && FAILED=1
    tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
    echo "| $name | $rc$( ((rc == 124)) && echo ' (timed out)') | $((SECONDS - t0)) | $name.log |" \
        >> "$SUMMARY"
}

for g in 2 4; do
    step "static_g$((g * g))" 90 $PY benchmarks/static_report.py --archs 90 --grid $g \
        --out "$OUT/static_report_g$((g * g)).md" --json "$OUT/static_estimate_g$((g * g)).json"
done
if [[ $DRY == 1 ]]; then
    step triton_tests 120 env TRITON_INTERPRET=1 $PY -m pytest -q -m triton tests/kernels \
        -k "x2-batch2 and fp32 or launch_config or region_renders"
else
    step triton_tests 240 env -u TRITON_INTERPRET $PY -m pytest -q -m triton tests/kernels
fi
step tiling 60 $PY benchmarks/gpu_check.py tiling --out "$OUT" $DRYFLAG
step precision 90 $PY benchmarks/gpu_check.py precision --out "$OUT" --val "$VAL" $DRYFLAG
if [[ $DRY == 1 ]]; then
    step kernels 120 env TRITON_INTERPRET=1 $PY benchmarks/gpu_check.py kernels --out "$OUT" \
        --dry-run
else
    step kernels 120 $PY benchmarks/gpu_check.py kernels --out "$OUT"
fi
step e2e 150 $PY benchmarks/gpu_check.py e2e --out "$OUT" --val "$VAL" $DRYFLAG

{
    echo
    echo "total $((SECONDS - START)) s"
    for f in tiling precision kernels e2e; do
        [[ -f "$OUT/$f.md" ]] && { echo; echo "## $f"; echo; cat "$OUT/$f.md"; }
    done
} >> "$SUMMARY"
echo "results: $OUT (summary.md)"
if [[ $DRY == 1 ]]; then
    if [[ $FAILED == 0 ]]; then
        echo "DRY RUN: every step ran; the plumbing works. Nothing was measured (no GPU)."
    else
        echo "DRY RUN: a step failed (see $SUMMARY). Nothing was measured (no GPU)."
    fi
fi
exit $FAILED
