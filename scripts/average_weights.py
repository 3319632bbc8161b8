"""Average weights files of one architecture, parameter by parameter (a "model soup").

    python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors [...]

Cooldowns branched from one training run stay close enough that their average is a model
of its own, often better than each; score it like any candidate before shipping it. The
average is taken in float32 and saved in float16, as the shipped weights are; its "steps"
is the largest of the inputs', and "averaged" names them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from gsasr_cli.errors import GsasrError
from gsasr_cli.weights_io import load_model, save_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("weights", type=Path, nargs="+")
    args = ap.parse_args()
    if len(args.weights) < 2:
        ap.error("give at least two weights files to average")
    if os.path.lexists(args.out):  # never an input, never a result written before
        sys.exit(f"{args.out}: exists; not replaced (remove it first)")
    try:
        models = [load_model(p) for p in args.weights]
    except GsasrError as exc:
        sys.exit(str(exc))
    if any(m.cfg != models[0].cfg for m in models):
        sys.exit("the weights files are of different architectures")
    avg, params = models[0], [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for name, p in params[0].items():
            p.copy_(torch.stack([ps[name].float() for ps in params]).mean(0))
    steps = []
    for path in args.weights:
        with safe_open(str(path), "pt") as f:
            recorded = (f.metadata() or {}).get("steps", "")
            steps.append(int(recorded) if recorded.isdigit() else 0)
    names = ", ".join(
        p.name if p.parent.name in ("", ".") else f"{p.parent.name}/{p.name}" for p in args.weights
    )
    save_weights(avg, args.out, extra={"steps": str(max(steps)), "averaged": names})
    print(f"{args.out}: the average of {len(models)} ({names})")


if __name__ == "__main__":
    main()
