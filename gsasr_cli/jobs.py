"""Batches: which inputs, which outputs, and running them one file at a time.

`plan` turns the inputs and a `Request` into `Job`s, streaming: folders are walked lazily
and every output path is decided from the request alone (no image is opened), so a run
over millions of files holds no list of them and a cluster driver can plan without
reading pixels. Planning refuses what would lose data: an output that is an input of the
run, two inputs with one output. `execute` then runs the jobs one file at a time: probe,
check, read, upscale, encode, write atomically. A failing file ends as a failed `Result`
for that file only; the batch goes on. Nothing here prints: results come back as
`Result`s for the CLI to report.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import stat
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import GsasrError, InvalidRequest, OutputClosed, UsageProblem
from .files import (
    OutputExists,
    check_name,
    check_replaceable,
    make_folder,
    read_file,
    read_stdin,
    real_path,
    reason,
    same_file,
    write_atomic,
)
from .imageio import (
    FORMATS,
    INPUT_SUFFIXES,
    MAX_INPUT_BYTES,
    MAX_INPUT_PIXELS,
    WHITE,
    check_output_size,
    decode,
    encode,
    probe_bytes,
    probe_image,
    read_image,
)
from .options import DEFAULT_OPTIONS, UpscaleOptions
from .sizing import MAX_OUTPUT_PIXELS, Sizing

if TYPE_CHECKING:
    import torch

    from .model import GSASR

STDIO = "-"
TEMPLATE_FIELDS = ("stem", "suffix", "ext")


class Status(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class Request:
    """Everything that decides the jobs of a run, before any file is opened."""

    sizing: Sizing
    output: str | None = None  # file, folder, "-" (stdout), or None (beside each input)
    fmt: str | None = None  # output format as an extension (".png"), or None: by input
    recursive: bool = False
    globs: tuple[str, ...] = ()  # keep only files matching one (name, or relative path)
    excludes: tuple[str, ...] = ()  # drop files and folders matching one
    follow_symlinks: bool = False
    name: str | None = None  # output name template: {stem}, {suffix}, {ext}
    overwrite: bool = False  # replace existing outputs
    skip_existing: bool = False  # a single input whose output exists is skipped, not failed


@dataclass(frozen=True)
class Job:
    """One input and where its result goes."""

    source: Path | None  # None: standard input
    output: Path | None  # None: standard output
    ext: str  # output format, as an extension: ".png"
    batch: bool  # part of a folder or multi-file run: an existing output is skipped
    problem: str | None = None  # refused when planning: the job fails without any work
    repeat: str | None = None  # the same input and output planned before: skipped, no work

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<stdin>"

    @property
    def decided(self) -> bool:
        """Settled when planning: refused, or a repeat; no file is opened for it."""
        return self.problem is not None or self.repeat is not None


@dataclass
class Result:
    """What happened to one job; serialised as one JSON line with --json."""

    input: str
    output: str | None
    status: Status = Status.OK
    input_size: list[int] | None = None  # [width, height]
    output_size: list[int] | None = None
    scale: list[float] | None = None  # [x, y]
    tile: int | None = None
    device: str | None = None
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    invalid: bool = False  # failed because the request cannot work for it (exit 2)

    def to_json(self) -> dict[str, Any]:
        """The record for --json; strictly UTF-8 even for names that are not: such a name
        reads with U+FFFD in `input`/`output`, its exact bytes in `input_bytes`/
        `output_bytes` (base64), and U+FFFD in messages (lone surrogates break many
        JSON parsers)."""
        import base64

        record = asdict(self)
        del record["invalid"]
        record["status"] = self.status.value
        for key in ("input", "output"):
            name = record[key]
            if name is not None and name != _utf8(name):
                record[key] = _utf8(name)
                record[f"{key}_bytes"] = base64.b64encode(os.fsencode(name)).decode("ascii")
        if record["error"] is not None:
            record["error"] = _utf8(record["error"])
        record["warnings"] = [_utf8(w) for w in record["warnings"]]
        return record


def _utf8(text: str) -> str:
    """`text` with the bytes that a non-UTF-8 file name left as lone surrogates shown as
    U+FFFD."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name makes
        data = text.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------- planning


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regex for a glob: `*` and `?` stay within a path segment,
    `**/` spans any number of folders; a pattern without `/` matches the name alone."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


class _Filter:
    """Which files of a folder walk are inputs."""

    def __init__(self, globs: Iterable[str], excludes: Iterable[str]) -> None:
        self.globs = [(("/" in g), _glob_regex(g)) for g in globs]
        self.excludes = [(("/" in g), _glob_regex(g)) for g in excludes]

    @staticmethod
    def _hit(rules: list[tuple[bool, re.Pattern[str]]], rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(rx.match(rel if full else name) for full, rx in rules)

    def excluded(self, rel: str) -> bool:
        return self._hit(self.excludes, rel)

    def wanted(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(".") or self.excluded(rel):  # hidden, also AppleDouble "._name"
            return False
        if self.globs:
            return self._hit(self.globs, rel)
        return Path(name).suffix.lower() in INPUT_SUFFIXES


def _no_file(exc: OSError) -> str:
    """Why a name that is there (a symlink) gives no file, from its stat error."""
    if exc.errno in (errno.ENOENT, errno.ELOOP):
        return "a symbolic link that leads to no file (its target is missing, or a loop)"
    return f"cannot be read ({reason(exc)})"


class Found(NamedTuple):
    """What a folder walk found: an input file, or a problem that keeps a file or a whole
    folder (`folder`) from being read."""

    path: Path
    problem: str | None = None
    folder: bool = False


def walk(
    root: Path, recursive: bool, keep: _Filter, follow: bool, skip: set[Path]
) -> Iterator[Found]:
    """The input files below `root`, in sorted order, lazily. A folder that cannot be
    listed comes as a problem (its images would be lost without a word), and so does,
    when links are followed, a wanted name whose link leads to no file. `skip` folders
    are left out."""
    stack = [(root, "")]
    seen: set[tuple[int, int]] = set()
    while stack:
        folder, rel = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Found(folder, f"{folder}: cannot list the folder ({reason(exc)})", True)
            continue
        subdirs = []
        for entry in entries:
            sub = f"{rel}{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=follow)
                is_file = entry.is_file(follow_symlinks=follow)
                if follow and not (is_dir or is_file) and entry.is_symlink():
                    os.stat(entry.path)  # a link to nothing raises; one to a pipe does not
            except OSError as exc:  # a followed link to nothing, a loop, no permission
                if keep.wanted(sub):
                    yield Found(Path(entry.path), f"{entry.path}: {_no_file(exc)}")
                continue
            if is_dir:
                if recursive and not entry.name.startswith(".") and not keep.excluded(sub):
                    path = Path(entry.path)
                    if real_path(path) not in skip:
                        subdirs.append((path, sub + "/"))
            elif is_file and keep.wanted(sub):
                yield Found(Path(entry.path))
        stack.extend(reversed(subdirs))  # depth-first, in name order


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The images of `folder` as a batch run would find them (hidden files left out)."""
    if not os.path.isdir(folder):
        raise GsasrError(f"{folder}: not a folder")
    paths = []
    for found in walk(folder, recursive, _Filter((), ()), False, set()):
        if found.problem is not None:
            raise GsasrError(found.problem)
        paths.append(found.path)
    if not paths:
        raise GsasrError(f"{folder}: no images ({', '.join(sorted(INPUT_SUFFIXES))})")
    return paths


def plan(inputs: list[str], req: Request) -> Iterator[Job]:
    """Jobs for `inputs` (files, folders, "-"), streaming. Raises UsageProblem up front for
    a request that cannot work at all; a job that would lose data carries a `problem`."""
    ext = format_ext(req.fmt) if req.fmt else None
    _check_template(req.name)
    name_ext = _template_ext(req.name)
    if ext is not None and name_ext is not None and not _same_format(ext, name_ext):
        raise UsageProblem(f"--name {req.name!r} and --format {req.fmt} disagree; give one of them")
    if not inputs:
        raise UsageProblem("no input given")
    folders = [Path(i) for i in inputs if i != STDIO and os.path.isdir(i)]
    for item in inputs:
        if item != STDIO and not os.path.lexists(item):
            raise UsageProblem(f"{item}: no such file or folder")
    batch = len(inputs) > 1 or bool(folders)
    if batch and STDIO in inputs:
        raise UsageProblem("standard input (-) cannot be combined with other inputs")
    if req.output == STDIO:
        if batch:
            raise UsageProblem("-o - writes one image to standard output; give one input")
        if ext is None:
            raise UsageProblem("-o - needs --format (png, jpg, webp, tif or bmp)")
    out = Path(req.output) if req.output not in (None, STDIO) else None
    slash = str(req.output).endswith(("/", os.sep))
    to_folder = out is not None and (os.path.isdir(out) or slash)
    if folders and out is None:
        raise UsageProblem("a folder input needs -o DIR for its outputs")
    if batch and out is not None and not to_folder:
        looks_like_file = os.path.exists(out) or out.suffix.lower() in FORMATS
        if looks_like_file:
            raise UsageProblem("several inputs or a folder need -o DIR, not a file")
        to_folder = True
    if out is not None and not to_folder and ext is not None and out.suffix.lower() in FORMATS:
        if not _same_format(out.suffix.lower(), ext):
            raise UsageProblem(f"-o {out} and --format {req.fmt} disagree; give one of them")
    keep = _Filter(req.globs, req.excludes)
    # An output folder inside an input folder is not scanned (a rerun would upscale its
    # own outputs); one that is an input folder itself stays an input, and guarded.
    skip: set[Path] = set()
    if to_folder and out is not None:
        target = real_path(out)
        if any(target != real_path(f) and target.is_relative_to(real_path(f)) for f in folders):
            skip.add(target)
    is_input = _InputTest(inputs, req.recursive, keep, skip)
    planned = _Outputs()
    for found, root in _sources(inputs, req, keep, skip):
        src = found.path if found is not None else None
        if found is not None and found.folder:  # a folder that could not be listed
            assert out is not None and root is not None  # folder inputs need -o DIR
            yield Job(src, out / found.path.relative_to(root), ".png", True, found.problem)
            continue
        job = _job(src, root, req, ext, name_ext, out, to_folder, batch)
        if found is not None and found.problem is not None:
            job = _with_problem(job, found.problem)
        elif job.output is not None and job.problem is None:
            job = _refuse_losses(job, is_input, planned)
        yield job


def _sources(
    inputs: list[str], req: Request, keep: _Filter, skip: set[Path]
) -> Iterator[tuple[Found | None, Path | None]]:
    """Each input (None: standard input) and the folder input it was found in."""
    for item in inputs:
        if item == STDIO:
            yield None, None
            continue
        path = Path(item)
        if os.path.isdir(path):
            for found in walk(path, req.recursive, keep, req.follow_symlinks, skip):
                yield found, path
        else:
            yield Found(path), None


def _job(
    src: Path | None,
    root: Path | None,
    req: Request,
    ext: str | None,
    name_ext: str | None,
    out: Path | None,
    to_folder: bool,
    batch: bool,
) -> Job:
    """`ext` is --format's, `name_ext` the one --name ends in (used where --name is)."""
    if src is None:  # standard input
        if req.output is None:
            raise UsageProblem("standard input needs -o FILE or -o -")
        if out is None:
            assert ext is not None
            return Job(None, None, ext, False)
        if to_folder:
            raise UsageProblem("standard input needs -o FILE (a file name, not a folder)")
        return Job(None, out, ext or output_ext(out), False)
    if req.output == STDIO:
        return Job(src, None, ext or _ext_like(src), False)
    if out is not None and not to_folder:
        return Job(src, out, ext or output_ext(out), False)
    out_ext = ext or name_ext or _ext_like(src)
    if out is not None:  # into a folder: mirror the tree below a folder input
        rel = src.relative_to(root).parent if root is not None else Path()
        name = render_name(req.name or "{stem}{ext}", src, req.sizing.suffix(), out_ext)
        return Job(src, out / rel / name, out_ext, batch)
    if _is_pipe(src):  # `<(cat a.png)`, a named pipe
        raise UsageProblem(f"{src}: a pipe, with no output name of its own; needs -o FILE or -o -")
    name = render_name(req.name or "{stem}{suffix}{ext}", src, req.sizing.suffix(), out_ext)
    return Job(src, src.with_name(name), out_ext, batch)


def _is_pipe(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def render_name(template: str, src: Path, suffix: str, ext: str) -> str:
    """An output file name from a template of {stem}, {suffix} (`_x3.7`) and {ext} (`.png`)."""
    return template.format(stem=src.stem, suffix=suffix, ext=ext)


def _check_template(template: str | None) -> None:
    if template is None:
        return
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise UsageProblem(f"--name {template!r}: {exc}") from exc
    unknown = names - set(TEMPLATE_FIELDS)
    if unknown or "/" in template or os.sep in template or "{stem}" not in template:
        raise UsageProblem(
            f"--name {template!r}: use {{stem}} and optionally {{suffix}} and {{ext}}, "
            "no folders, e.g. '{stem}_big{ext}'"
        )


def _template_ext(template: str | None) -> str | None:
    """The output extension a --name template spells out at its end ('{stem}.jpg'), if
    it is an output format: the files it names are written in that format."""
    if template is None:
        return None
    *_, (tail, field_name, _, _) = string.Formatter().parse(template)
    suffix = Path("x" + tail).suffix.lower() if field_name is None else ""
    if suffix in INPUT_SUFFIXES and suffix not in FORMATS:
        raise UsageProblem(
            f"--name {template!r}: {suffix} is read, not written; end it in {{ext}} or one "
            f"of {', '.join(sorted(FORMATS))}"
        )
    return suffix if suffix in FORMATS else None


def _same_format(ext: str, other: str) -> bool:
    """Whether two output extensions (".jpg", ".jpeg") name one format."""
    return FORMATS[ext][0] == FORMATS[other][0]


class _InputTest:
    """Whether a path is one of this run's inputs, without listing them all."""

    def __init__(self, inputs: list[str], recursive: bool, keep: _Filter, skip: set[Path]) -> None:
        self.files = {real_path(i) for i in inputs if i != STDIO and not os.path.isdir(i)}
        self.folders = [real_path(i) for i in inputs if i != STDIO and os.path.isdir(i)]
        self.recursive, self.keep, self.skip = recursive, keep, skip

    def __call__(self, path: Path) -> bool:
        p = real_path(path)
        if p in self.files:
            return True
        if any(p.is_relative_to(s) for s in self.skip):  # the output tree is not scanned
            return False
        for folder in self.folders:
            try:
                rel = p.relative_to(folder)
            except ValueError:
                continue
            if (self.recursive or len(rel.parts) == 1) and self.keep.wanted(rel.as_posix()):
                return True
        return False


class _Outputs:
    """The outputs planned so far: for each, a 16-byte digest, and its input's in one bytes
    object with the input's name (about 330 bytes an output, measured with 28-character
    names: 330 MB per million)."""

    _STDIN = bytes(16)

    def __init__(self) -> None:
        self.owner: dict[bytes, bytes] = {}

    def claim(self, output: Path, source: Path | None, name: str) -> tuple[str, bool] | None:
        """Record `output` for input `source` (None: standard input), called `name`. If
        another input took it first: that input's name, and whether it is the same file
        (the same input given twice)."""
        key = self._digest(os.path.abspath(output))
        src = self._digest(real_path(source)) if source is not None else self._STDIN
        prior = self.owner.get(key)
        if prior is None:
            self.owner[key] = src + os.fsencode(name)
            return None
        same = src != self._STDIN and prior[:16] == src
        return os.fsdecode(prior[16:]), same

    @staticmethod
    def _digest(path: str | Path) -> bytes:
        return hashlib.blake2b(os.fsencode(path), digest_size=16).digest()


def _refuse_losses(job: Job, is_input: _InputTest, planned: _Outputs) -> Job:
    assert job.output is not None
    try:
        check_name(job.output)
    except GsasrError as exc:
        return _with_problem(job, str(exc))
    if job.source is not None and same_file(job.output, job.source):
        return _with_problem(job, f"{job.output}: is the input itself; refusing to replace it")
    if is_input(job.output) and os.path.exists(job.output):
        return _with_problem(job, f"{job.output}: is an input of this run; refusing to replace it")
    prior = planned.claim(job.output, job.source, job.name)
    if prior is not None:
        name, same = prior
        if same:
            again = "given twice" if name == job.name else f"the same file as {name}"
            return replace(job, repeat=f"{job.name}: {again}; done once")
        return _with_problem(job, f"{job.output}: also the output of {name}; not written twice")
    return job


def _with_problem(job: Job, problem: str) -> Job:
    return replace(job, problem=problem)


def format_ext(fmt: str) -> str:
    """--format's value as an output extension (".png")."""
    ext = "." + fmt.lower().lstrip(".")
    if ext not in FORMATS:
        raise UsageProblem(f"--format {fmt}: use one of png, jpg, webp, tif, bmp")
    return ext


def output_ext(path: Path) -> str:
    """The format of an output file name, by its extension."""
    if path.suffix.lower() not in FORMATS:
        raise UsageProblem(
            f"{path}: unsupported output format {path.suffix or '(no extension)'}; "
            f"use one of {', '.join(sorted(FORMATS))} or --format"
        )
    return path.suffix.lower()


def _ext_like(src: Path) -> str:
    """The input's own extension, as it is spelt, when it is an output format; else .png."""
    return src.suffix if src.suffix.lower() in FORMATS else ".png"


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Settings:
    """How the jobs of a run are executed (the model side and the encoder side)."""

    options: UpscaleOptions = DEFAULT_OPTIONS
    device: str = "auto"
    weights: Path | None = None
    quality: int = 95
    dry_run: bool = False
    max_output_pixels: int = MAX_OUTPUT_PIXELS
    max_input_pixels: int = MAX_INPUT_PIXELS
    max_input_bytes: int = MAX_INPUT_BYTES
    background: tuple[int, int, int] = WHITE  # what transparency is flattened onto


class Skip(Exception):
    """The job's output already exists and is not to be replaced."""


class Runner:
    """Runs jobs one file at a time; loads the model on the first file that needs it."""

    def __init__(
        self,
        req: Request,
        settings: Settings,
        *,
        model: GSASR | None = None,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> None:
        self.req, self.settings, self.model = req, settings, model
        self.on_tile = on_tile
        self.device: torch.device | None = None
        # How outputs reach their path: `write_atomic`'s signature; a cluster worker puts its
        # temporary files where a sweep after its death can find them (cluster.py).
        self.write: Callable[..., None] = write_atomic

    def preflight(self) -> None:
        """Check the device, the precision and the weights path before any file, without
        loading the model (a request that fails on every file then costs nothing)."""
        if self.model is not None:
            return
        from .inference import resolve_device
        from .tiling import autocast_dtype

        self.device = resolve_device(self.settings.device)
        autocast_dtype(self.settings.options.precision, self.device)
        weights = self.settings.weights
        if weights is not None and not os.path.isfile(weights):
            raise InvalidRequest(f"{weights}: weights file not found")

    def load(self) -> GSASR:
        """The model, loaded once, on the first file that needs it."""
        if self.model is None:
            from .api import load_model

            self.preflight()
            self.model = load_model(self.settings.weights, str(self.device))
        if self.device is None:
            self.device = next(self.model.parameters()).device
        return self.model

    def settled(self, job: Job) -> bool:
        """Whether `run(job)` ends without opening the input: a job refused when planning, or
        an output that exists and is not to be replaced (the first check of a run)."""
        if job.decided:
            return True
        return job.output is not None and not self.req.overwrite and os.path.lexists(job.output)

    def run(self, job: Job) -> Result:
        """One job, start to finish; every problem ends in the Result, never raised."""
        start = time.perf_counter()
        r = Result(job.name, str(job.output) if job.output is not None else "<stdout>")
        try:
            if job.problem is not None:
                raise GsasrError(job.problem)
            if job.repeat is not None:
                raise Skip(job.repeat)
            self._run(job, r)
        except Skip as exc:
            r.status, r.error = Status.SKIPPED, str(exc)
        except GsasrError as exc:
            r.status, r.error, r.invalid = Status.FAILED, str(exc), isinstance(exc, InvalidRequest)
            if isinstance(exc, InvalidRequest) and job.source is not None:
                r.error = f"{job.name}: {exc}"
        r.warnings = list(dict.fromkeys(r.warnings))  # probe and decode may say one thing twice
        r.seconds = round(time.perf_counter() - start, 3)
        return r

    def _run(self, job: Job, r: Result) -> None:
        req, st = self.req, self.settings
        warn = r.warnings.append
        if job.output is not None and os.path.lexists(job.output) and not req.overwrite:
            self._exists(job)
        if job.output is not None:
            check_replaceable(job.output)  # before any work, as write_atomic would refuse
        # Size and format from the headers: nothing is decoded before the request is known
        # to be possible (dry runs decode nothing at all).
        data = None
        if job.source is None:
            data = read_stdin(max_bytes=st.max_input_bytes)
        elif not os.path.isfile(job.source):  # a pipe cannot be read twice
            data = read_file(job.source, max_bytes=st.max_input_bytes)
        limits: dict[str, Any] = {"max_pixels": st.max_input_pixels, "on_warning": warn}
        if data is not None:
            info = probe_bytes(data, job.name, **limits)
        else:
            assert job.source is not None
            info = probe_image(job.source, max_bytes=st.max_input_bytes, **limits)
        out_size, scale = req.sizing.target(
            info.height, info.width, max_pixels=st.max_output_pixels
        )
        r.input_size, r.output_size = [info.width, info.height], [out_size[1], out_size[0]]
        r.scale = [scale[1], scale[0]]
        if out_size[0] * out_size[1] >= LARGE_OUTPUT_PIXELS:
            return_freed_memory()
        target = str(job.output) if job.output is not None else "<stdout>"
        check_output_size(job.ext, *out_size, name=target, channels=info.channels, bits=info.bits)
        if job.output is not None:
            _check_output_folder(job.output, create=not st.dry_run)
        if st.dry_run:
            r.status = Status.DRY_RUN
            return
        if data is not None:
            image = decode(data, job.name, **limits)
        else:
            assert job.source is not None
            image = read_image(job.source, max_bytes=st.max_input_bytes, **limits)
        from .inference import upscale_image

        model = self.load()
        assert self.device is not None
        r.device = str(self.device)
        result, r.tile = upscale_image(
            model, image, out_size, scale, self.device, st.options, self.on_tile
        )
        del image
        encoded = encode(
            result, job.ext, st.quality, background=st.background, name=target, on_warning=warn
        )
        if job.output is None:
            _write_stdout(encoded)
            return
        try:
            self.write(job.output, encoded, overwrite=req.overwrite)
        except OutputExists:  # another process wrote it meanwhile
            self._exists(job)

    def _exists(self, job: Job) -> None:
        """Something is at the output and is not to be replaced. A finished result (a file
        with data) is skipped in a batch or with --skip-existing, else refused; anything
        else there (an empty file, a link to nothing, a folder, a device or pipe) is no
        result, so it is a failure either way, never a skip."""
        path = job.output
        assert path is not None
        try:
            st = os.stat(path)
        except OSError as exc:  # there (lexists), yet no stat: a symlink to nothing
            raise GsasrError(
                f"{path}: {_no_file(exc)}; not replaced (--overwrite replaces the link)"
            ) from exc
        check_replaceable(path)  # a device, pipe or socket
        if stat.S_ISDIR(st.st_mode):
            raise GsasrError(f"{path}: a folder, not a file; not replaced")
        if st.st_size == 0:
            raise GsasrError(
                f"{path}: exists but is empty, no finished result (use --overwrite to replace it)"
            )
        if job.batch or self.req.skip_existing:
            raise Skip(f"{path}: exists (use --overwrite to replace it)")
        raise GsasrError(f"{path}: output exists (use --overwrite to replace it)")


def execute(jobs: Iterable[Job], runner: Runner) -> Iterator[Result]:
    """Run the jobs one by one, yielding a Result for each; a failure stops only its file."""
    for job in jobs:
        yield runner.run(job)


# Outputs from this size on make the process return freed memory at once (see below).
LARGE_OUTPUT_PIXELS = 16_000_000


@functools.cache
def return_freed_memory() -> None:
    """Have glibc unmap large freed buffers at once (a fixed mmap threshold of 1 MiB).

    By default glibc raises its threshold after the first large free and then keeps later
    freed tile buffers in the heap: a big image's peak RSS would count tiles long gone.
    It costs every large allocation a fresh mapping (about 25% on small images), so it is
    set once, at the first output of LARGE_OUTPUT_PIXELS or more.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _check_output_folder(output: Path, create: bool) -> None:
    """Make (or, without `create`, check makeable) the output's folder; GsasrError if not."""
    folder = output.parent
    if create:
        make_folder(folder, str(output))
        return
    probe = folder
    while not os.path.exists(probe) and probe.parent != probe:  # the nearest existing ancestor
        probe = probe.parent
    if not os.path.isdir(probe):
        raise GsasrError(f"{output}: cannot write ({probe} is a file, not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GsasrError(f"{output}: cannot write ({probe} is not writable)")


def _write_stdout(data: bytes) -> None:
    """All of `data` to standard output, or OutputClosed: a reader that goes away mid-image
    ends a write short (the count it returns), which is not success."""
    if sys.stdout is None:
        raise GsasrError("<stdout>: standard output is closed")
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 20]) :]
    except BrokenPipeError:
        raise OutputClosed from None
