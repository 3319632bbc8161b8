"""Batches: which inputs, which outputs, and running them one file at a time.

The CLI turns its arguments into a list of `Job`s (`plan`), then `execute` runs them one
file at a time: read, upscale, encode, write atomically. A failing file ends as a failed
`Result` for that file only; the batch goes on. Nothing here prints: results come back as
`Result`s for the CLI to report.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import GsasrError, UsageProblem
from .imageio import FORMATS, check_writable, decode, encode, read_image, write_atomic
from .upscale import Sizing

STDIO = "-"


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (None: stdin / stdout)."""

    source: Path | None
    output: Path | None
    ext: str  # output format, as an extension: ".png"
    batch: bool  # part of a folder or multi-file run: an existing output is skipped
    create_dir: bool = False  # the output folder may be created (-o DIR/ or a batch)

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<stdin>"


@dataclass
class Result:
    """What happened to one job; serialised as one JSON line with --json."""

    input: str
    output: str | None
    status: str = "ok"  # ok | skipped | failed | dry-run
    input_size: list[int] | None = None  # [width, height]
    output_size: list[int] | None = None
    scale: list[float] | None = None  # [x, y]
    tile: int | None = None
    device: str | None = None
    seconds: float = 0.0
    error: str | None = None


def _hidden(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(p.startswith(".") for p in parts)  # also AppleDouble "._name"


def collect(
    inputs: list[str], recursive: bool, globs: list[str]
) -> list[tuple[Path | None, Path | None]]:
    """Expand inputs into (file, root folder it was found under, or None) pairs."""
    found: list[tuple[Path | None, Path | None]] = []
    for item in inputs:
        if item == STDIO:
            found.append((None, None))
            continue
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for candidate in sorted(path.glob(pattern)):
                if not candidate.is_file() or _hidden(candidate, path):
                    continue
                if globs:
                    if not any(fnmatch.fnmatch(candidate.name, g) for g in globs):
                        continue
                elif candidate.suffix.lower() not in FORMATS:
                    continue
                found.append((candidate, path))
        elif path.exists():
            found.append((path, None))
        else:
            raise UsageProblem(f"{path}: no such file or folder")
    return found


def plan(
    inputs: list[str],
    output: str | None,
    sizing: Sizing,
    fmt: str | None,
    recursive: bool = False,
    globs: list[str] | None = None,
) -> list[Job]:
    """Jobs for the command line's inputs; raises UsageProblem for impossible requests."""
    ext = _format_ext(fmt) if fmt else None
    sources = collect(inputs, recursive, globs or [])
    if not sources:
        raise UsageProblem("no input image matched")
    batch = len(sources) > 1 or any(root is not None for _, root in sources)
    if batch and any(src is None for src, _ in sources):
        raise UsageProblem("standard input (-) cannot be combined with other inputs")
    if output == STDIO:
        if batch:
            raise UsageProblem("-o - writes one image to standard output; give one input")
        if ext is None:
            raise UsageProblem("-o - needs --format (png, jpg, webp, tif or bmp)")
        if sys.stdout.isatty():
            raise UsageProblem("refusing to write image data to a terminal; redirect or pipe it")
        return [Job(sources[0][0], None, ext, False)]
    out_dir = Path(output) if output is not None else None
    if batch and (out_dir is None or (out_dir.exists() and not out_dir.is_dir())):
        raise UsageProblem("several inputs or a folder need -o DIR")
    jobs = []
    for src, root in sources:
        if src is None:
            if output is None:
                raise UsageProblem("standard input needs -o FILE or -o -")
            target = Path(output)
            jobs.append(Job(None, target, ext or _ext_of(target), False))
        elif batch:
            assert out_dir is not None
            rel = src.relative_to(root) if root is not None else Path(src.name)
            out_ext = ext or _writable_ext(src)
            jobs.append(Job(src, (out_dir / rel).with_suffix(out_ext), out_ext, True))
        elif out_dir is not None and (out_dir.is_dir() or str(output).endswith("/")):
            out_ext = ext or _writable_ext(src)
            jobs.append(Job(src, out_dir / (src.stem + out_ext), out_ext, False, True))
        elif out_dir is not None:
            jobs.append(Job(src, out_dir, ext or _ext_of(out_dir), False))
        else:
            jobs.append(
                Job(src, None, ext or _writable_ext(src), False)
            )  # named once size is known
    return jobs


def _format_ext(fmt: str) -> str:
    ext = "." + fmt.lower().lstrip(".")
    if ext not in FORMATS:
        raise UsageProblem(f"--format {fmt}: use one of png, jpg, webp, tif, bmp")
    return ext


def _ext_of(path: Path) -> str:
    if path.suffix.lower() not in FORMATS:
        raise UsageProblem(
            f"{path}: unsupported output format {path.suffix or '(no extension)'}; "
            f"use one of {', '.join(sorted(FORMATS))} or --format"
        )
    return path.suffix.lower()


def _writable_ext(src: Path) -> str:
    return src.suffix.lower() if src.suffix.lower() in FORMATS else ".png"


def output_for(job: Job, sizing: Sizing, out_size: tuple[int, int]) -> Path | None:
    """The output path; a single input without -o goes beside it, named by the size."""
    if job.output is not None or job.source is None:
        return job.output
    return job.source.with_name(job.source.stem + sizing.suffix(out_size) + job.ext)


def prepare(
    job: Job, sizing: Sizing, overwrite: bool, stdin: bytes | None = None, dry_run: bool = False
):
    """Read and check one job before any model work: (image, out path, out size, scale).

    Raises GsasrError (the file fails) or `Skip` (the output exists in a batch run).
    """
    image = read_image(job.source) if job.source is not None else decode(stdin or b"", "<stdin>")
    h, w = image.size
    out_size, scale = sizing.target(h, w)
    if min(scale) < 1:
        raise GsasrError(
            f"{job.name}: {w}x{h} -> {out_size[1]}x{out_size[0]} would shrink the "
            "image; gsasr only enlarges"
        )
    out = output_for(job, sizing, out_size)
    if out is not None:
        if job.source is not None and out.exists() and out.resolve() == job.source.resolve():
            raise GsasrError(f"{out}: refusing to overwrite the input image")
        if out.exists() and not overwrite:
            if job.batch:
                raise Skip(f"{out}: exists (use --overwrite to replace it)")
            raise GsasrError(f"{out}: output exists (use --overwrite to replace it)")
        if not dry_run:
            if job.batch or job.create_dir:
                out.parent.mkdir(parents=True, exist_ok=True)
            check_writable(out.parent, str(out))
    return image, out, out_size, scale


class Skip(Exception):
    """The job's output already exists and --overwrite was not given."""


def finish(result_image, job: Job, out: Path | None, quality: int) -> None:
    """Encode and write one result (atomically), or send it to standard output."""
    data = encode(result_image, job.ext, quality)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(out, data)


def execute(
    jobs: list[Job],
    sizing: Sizing,
    *,
    overwrite: bool,
    dry_run: bool,
    quality: int,
    alpha: str,
    device: str,
    weights: Path | None,
    tile: int | str = "auto",
    precision: str = "fp32",
    on_tile=None,
):
    """Run the jobs one by one, yielding a Result for each; a failure stops only its file.

    The model is loaded once, before the first file, and not at all for a dry run.
    """
    from .tiling import autocast_dtype
    from .upscale import resolve_device, upscale_image
    from .weights_io import load_model

    model = dev = None
    if not dry_run:
        dev = resolve_device(device)
        autocast_dtype(precision, dev)  # an impossible precision fails before any file
        model = load_model(weights, dev)
    stdin = sys.stdin.buffer.read() if any(j.source is None for j in jobs) else None
    for job in jobs:
        start = time.perf_counter()
        result = Result(input=job.name, output=None, device=str(dev) if dev else None)
        try:
            image, out, out_size, scale = prepare(job, sizing, overwrite, stdin, dry_run)
            result.output = str(out) if out is not None else "<stdout>"
            result.input_size = [image.size[1], image.size[0]]
            result.output_size = [out_size[1], out_size[0]]
            result.scale = [scale[1], scale[0]]
            if dry_run:
                result.status = "dry-run"
            else:
                upscaled, result.tile = upscale_image(
                    model, image, out_size, scale, dev, alpha, tile, precision, on_tile
                )
                finish(upscaled, job, out, quality)
        except Skip as exc:
            result.status, result.error = "skipped", str(exc)
        except GsasrError as exc:
            result.status, result.error = "failed", str(exc)
        result.seconds = round(time.perf_counter() - start, 3)
        yield result
