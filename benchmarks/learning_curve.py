"""The relay's learning curve, read from the model card's Legs table.

For each leg, the best candidate scored at all 8 scales (its mean Y-PSNR over v1's in dB),
the gain over the best before it, and LIIF's mean over v1 from an eval JSON of the same
val set (`gsasr eval --liif ... --json`). Prints a Markdown table; `--plot PNG` draws it.

    python benchmarks/learning_curve.py gsasr_cli/weights/README.md \
        benchmarks/results/eval_val.json --plot benchmarks/results/learning_curve.png
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

from gsasr_cli.evaluate import TABLE_SCALES
from gsasr_cli.files import write_atomic

SCALES = [f"{s:g}" for s in TABLE_SCALES]  # as `gsasr eval --json` keys its summary


def legs(card: str) -> tuple[list[float], dict[int, tuple[str, float]]]:
    """v1's scores (from the sentence above the table) and each leg's best 8-scale row."""
    found = re.search(r"v1 scores ((?:[\d.]+,?\s*)+)", card)
    if found is None:
        raise ValueError("no 'v1 scores ...' sentence in the model card")
    v1 = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", found.group(1))]
    if len(v1) != len(SCALES):
        raise ValueError(f"v1 scores: expected {len(SCALES)} numbers, found {len(v1)}")
    best: dict[int, tuple[str, float]] = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 13 or not cells[0].isdigit():
            continue
        scores = [re.match(r"([\d.]+) \(", c) for c in cells[4:12]]
        if not all(scores):  # a relay row, or scored at fewer scales
            continue
        leg, run, mean = int(cells[0]), cells[1], float(cells[12])
        if leg not in best or mean > best[leg][1]:
            best[leg] = (run.split(":")[0].replace("*", "").strip(), mean)
    if not best:
        raise ValueError("no leg scored at all 8 scales in the Legs table")
    return v1, best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("card", type=Path, help="the model card (gsasr_cli/weights/README.md)")
    ap.add_argument("eval_json", type=Path, help="gsasr eval --liif --json of the val set")
    ap.add_argument("--plot", type=Path, help="write the curve to this PNG")
    args = ap.parse_args(argv)
    try:
        v1, best = legs(args.card.read_text(encoding="utf-8"))
        summary = json.loads(args.eval_json.read_text(encoding="utf-8"))["summary"]
        liif = [summary[s]["liif"]["psnr"] for s in SCALES]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    liif_gain = sum(liif) / len(liif) - sum(v1) / len(v1)
    print("| leg | best candidate | mean vs v1 (dB) | gain over the legs before | LIIF - it |")
    print("|---|---|---|---|---|")
    before = 0.0
    for leg, (run, mean) in sorted(best.items()):
        print(f"| {leg} | {run} | {mean:+.3f} | {mean - before:+.3f} | {liif_gain - mean:.3f} |")
        before = max(before, mean)
    print(f"\nLIIF's mean over v1: {liif_gain:+.3f} dB ({args.eval_json}).")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.6))
        ax = fig.add_subplot()
        xs = sorted(best)
        ax.plot(xs, [best[x][1] for x in xs], "o-", label="gsasr, best candidate of the leg")
        ax.axhline(liif_gain, color="tab:red", linestyle="--", label="LIIF")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(xlabel="relay leg", ylabel="mean Y-PSNR over v1 (dB), 8 scales", xticks=xs)
        ax.legend(loc="lower right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        write_atomic(args.plot, buf.getvalue())  # never a half-written PNG
    return 0


if __name__ == "__main__":
    sys.exit(main())
