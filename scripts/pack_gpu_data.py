"""Pick training images that fit the GPU machine's carry limit, for scripts/gpu_leg.sh.

The device tool sends the working tree and the paths named in `carry`, 64 MiB in all; the
tracked files take about 16 MB of it. This links (or copies) a seeded random choice of
the images of SRC into OUT, as many as fit in --max-mb:

    python scripts/pack_gpu_data.py data/train --out data/gpu --max-mb 44
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from gsasr_cli.errors import GsasrError
from gsasr_cli.jobs import list_images


def choose(files: list[tuple[Path, int]], budget: int, seed: int) -> list[tuple[Path, int]]:
    """A seeded random order of `files` (path, bytes), each taken if it still fits."""
    order = sorted(files)
    random.Random(seed).shuffle(order)
    chosen, total = [], 0
    for path, size in order:
        if total + size <= budget:
            chosen.append((path, size))
            total += size
    return sorted(chosen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="a folder of training images (data/train)")
    ap.add_argument("--out", type=Path, required=True, help="a new folder (data/gpu)")
    ap.add_argument("--max-mb", type=float, default=44.0, help="total size in MB [44]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the choice [0]")
    args = ap.parse_args(argv)
    if not args.max_mb > 0 or args.max_mb == float("inf"):
        ap.error(f"--max-mb {args.max_mb:g}: give a size in MB above 0")
    if args.out.exists():
        print(f"error: {args.out}: exists; give a new folder", file=sys.stderr)
        return 1
    try:  # the images `gsasr train --data SRC` reads
        files = [(p, p.stat().st_size) for p in list_images(args.src)]
    except GsasrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    chosen = choose(files, int(args.max_mb * 1e6), args.seed)
    if not chosen:
        print(f"error: {args.src}: no image fits in {args.max_mb:g} MB", file=sys.stderr)
        return 1
    # Filled beside OUT and renamed when complete: a failed copy leaves no partial OUT.
    part = None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
        for path, _ in chosen:
            try:
                os.link(path, part / path.name)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(path, part / path.name)
        part.rename(args.out)
    except OSError as exc:
        print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if part is not None:
            shutil.rmtree(part, ignore_errors=True)  # gone already once renamed
    total = sum(size for _, size in chosen)
    print(f"{args.out}: {len(chosen)} of {len(files)} images, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
