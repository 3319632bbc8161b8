#!/usr/bin/env bash
# One relay leg on a lent GPU machine (the `device` tool), in one call of under 9 minutes:
#
#   here, once:  python scripts/pack_gpu_data.py data/train --out data/gpu --max-mb 44
#   there:       run(command="bash scripts/gpu_leg.sh", carry=["data/gpu"], timeout_s=600)
#   anywhere:    bash scripts/gpu_leg.sh --dry-run   (the CPU, seconds a phase, in /tmp;
#                                                    checks the plumbing, trains nothing)
#
# 1. The relay, from the committed weights/training/relay.safetensors, at the constant rate
#    for $RELAY_MIN minutes (default 5) on data/gpu (drawn by area).
# 2. A cosine cooldown branched from its end (cooldown 7L's recipe: scales U(1, 3)), its
#    length set from phase 1's steps/s to last about $COOL_MIN minutes (default 2.5).
# Back in $OUT: relay.safetensors (the relay's new compact file: commit it as
# weights/training/relay.safetensors and delete runs/relay, whose full checkpoint would
# otherwise be resumed instead), cooldown_ema.safetensors (the candidate: score it with
# benchmarks/eval_weights.py against the shipped weights), relay.log, cooldown.log.
# The PyTorch rasterizer is used unless GSASR_RASTERIZER says otherwise: the Triton kernels
# are checked on a GPU by benchmarks/gpu_check.sh, not here.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
DATA=${GSASR_LEG_DATA:-data/gpu}
RELAY_MIN=${RELAY_MIN:-5}
COOL_MIN=${COOL_MIN:-2.5}
WORKERS=${WORKERS:-12}
LOG_EVERY=200
export GSASR_RASTERIZER=${GSASR_RASTERIZER:-torch}
if [[ $DRY == 1 ]]; then
    OUT=${TMPDIR:-/tmp}/gsasr-gpu-leg-dry
    RELAY_MIN=0.15 COOL_MIN=0.15 WORKERS=1 LOG_EVERY=2
    rm -rf "$OUT"
fi
OUT=${OUT:?set OUT, the folder whose files come back (the device tool sets it)}
WORK=${TMPDIR:-/tmp}/gsasr-gpu-leg-work
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
source scripts/device_pythonpath.sh

if [[ ! -d "$DATA" ]]; then
    echo "error: $DATA: no such folder (make it with scripts/pack_gpu_data.py and carry it)"
    exit 2
fi
if [[ $DRY == 0 ]] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "error: no CUDA device here (use --dry-run to check the plumbing)"
    exit 2
fi
nvidia-smi -L 2>/dev/null
common=(--data "$DATA" --mix "" --workers "$WORKERS" --threads 4 --log-every "$LOG_EVERY")

echo "== 1. relay, $RELAY_MIN min"
$PY -m gsasr_cli.train "${common[@]}" --out "$WORK/relay" \
    --resume weights/training/relay.safetensors --relay-file "$OUT/relay.safetensors" \
    --minutes "$RELAY_MIN" --save-every 2000 > "$OUT/relay.log" 2>&1
rc=$?
tail -n 3 "$OUT/relay.log"
N=$(grep -o "stopped at step [0-9]*" "$OUT/relay.log" | tail -1 | grep -o "[0-9]*$")
RATE=$(grep -o "[0-9.]* steps/s" "$OUT/relay.log" | tail -1 | cut -d" " -f1)
if [[ $rc != 0 || -z "$N" || -z "$RATE" ]]; then
    echo "error: the relay phase failed (exit $rc; see relay.log)"
    exit 1
fi

K=$($PY -c "print(max(20, int($RATE * $COOL_MIN * 60 * 0.85)))")
echo "== 2. cooldown, steps $N..$((N + K)) at $RATE steps/s"
$PY -m gsasr_cli.train "${common[@]}" --out "$WORK/cooldown" --scale-max 3 \
    --resume "$WORK/relay/checkpoint.safetensors" --schedule cosine --decay-start "$N" \
    --steps $((N + K)) --minutes "$($PY -c "print($COOL_MIN * 1.3)")" --save-every 1000 \
    > "$OUT/cooldown.log" 2>&1
rc=$?
tail -n 3 "$OUT/cooldown.log"
cp "$WORK/cooldown/ema.safetensors" "$OUT/cooldown_ema.safetensors" || rc=1
ls -l "$OUT"
[[ $DRY == 1 ]] && echo "DRY RUN: both phases ran on the CPU; nothing was trained to keep."
exit $rc
