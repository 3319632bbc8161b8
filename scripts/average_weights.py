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

from gsasr_cli.errors import GsasrError
from gsasr_cli.weights_io import load_with_metadata, save_weights


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
        loaded = [load_with_metadata(p) for p in args.weights]
    except GsasrError as exc:
        sys.exit(str(exc))
    models = [model for model, _ in loaded]
    if any(m.cfg != models[0].cfg for m in models):
        sys.exit("the weights files are of different architectures")
    avg, params = models[0], [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for name, p in params[0].items():
            p.copy_(torch.stack([ps[name].float() for ps in params]).mean(0))
    recorded = [metadata.get("steps", "") for _, metadata in loaded]
    steps = [int(r) if r.isdigit() else 0 for r in recorded]
    names = ", ".join(
        p.name if p.parent.name in ("", ".") else f"{p.parent.name}/{p.name}" for p in args.weights
    )
    save_weights(avg, args.out, extra={"steps": str(max(steps)), "averaged": names})
    print(f"{args.out}: the average of {len(models)} ({names})")


if __name__ == "__main__":
    main()
