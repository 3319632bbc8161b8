"""The `gsasr` command line: thin commands over the library; stdout for results only."""

from __future__ import annotations

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
from .errors import GsasrError

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


def _default_output(path: Path, scale: float) -> Path:
    return path.with_name(f"{path.stem}_x{scale:g}{path.suffix}")


@app.command()
def upscale(
    input: Annotated[Path, typer.Argument(help="Image to upscale (PNG, JPEG, WebP, TIFF, BMP).")],
    scale: Annotated[float, typer.Option("--scale", "-s", help="Scale factor, any number >= 1.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file [default: <stem>_x<scale>.<ext>]."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    weights: Annotated[
        Path | None, typer.Option(help="Model weights (.safetensors) [default: shipped model].")
    ] = None,
) -> None:
    """Upscale one image by any factor, e.g. [bold]gsasr upscale photo.png --scale 3.7[/]."""
    if not math.isfinite(scale) or scale < 1:
        raise typer.BadParameter(f"must be a number >= 1, got {scale:g}", param_hint="--scale")
    # Imported here so that `gsasr --help` and `--version` do not pay for torch.
    from .imageio import FORMATS, check_writable, encode, read_image, write_atomic
    from .upscale import output_size, resolve_device, upscale_image
    from .weights_io import load_model

    out = output if output is not None else _default_output(input, scale)
    if out.suffix.lower() not in FORMATS:
        raise GsasrError(f"{out}: unsupported output format {out.suffix or '(no extension)'}; "
                         f"use one of {', '.join(sorted(FORMATS))}")
    if out.exists() and input.exists() and out.resolve() == input.resolve():
        raise GsasrError(f"{out}: refusing to overwrite the input image")
    if out.exists() and not overwrite:
        raise GsasrError(f"{out}: output exists (use --overwrite to replace it)")
    check_writable(out.parent if str(out.parent) else Path("."), str(out))
    image = read_image(input)
    dev = resolve_device(device)
    model = load_model(weights, dev)

    h, w = image.size
    size = output_size(h, w, scale)
    err.print(f"{input}: {w}x{h} -> {size[1]}x{size[0]} (x{scale:g}) on {dev}", soft_wrap=True)
    start = time.perf_counter()
    result = upscale_image(model, image, size, (scale, scale), dev)
    data = encode(result, out.suffix, quality)
    write_atomic(out, data)
    err.print(f"wrote {out} in {time.perf_counter() - start:.2f} s", soft_wrap=True)


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
            lines.append(f"device cuda:{i} {torch.cuda.get_device_name(i)}, "
                         f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
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
    except GsasrError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True, soft_wrap=True)
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
