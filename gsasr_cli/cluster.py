"""The same batch on a Ray cluster: the driver plans, actors upscale, results stream back.

The driver takes the jobs of `jobs.plan` as they come (paths only; it never opens an image)
and keeps at most `depth` of them outstanding per worker, so a plan of millions of files
holds a few jobs in flight, not a list. Jobs that end without touching the input (refused
when planning, or an output that exists) are settled on the driver by the same `Runner`,
so a resumed run costs the cluster nothing for the files already done.

Each worker is a Ray actor holding one `Runner` (the model loaded once) that runs jobs one
at a time with the local engine's code: the same probe, checks, upscale, encode and
exclusive atomic write, hence byte-identical outputs and the same `Result` records.

Faults. A worker that dies (killed, out of memory, its node lost) takes its outstanding
jobs with it: they go back to the queue and run on the other workers or a replacement;
the one it was running counts an attempt, and a file that kills `MAX_ATTEMPTS` workers
fails alone. A killed process cannot clean up after itself, so a worker writes each
output inside a hidden folder of its own beside the output (`.gsasr-<run>-<worker>/`,
`write_atomic`'s temporary file included) and then links the finished file into place.
Once a worker is dead, the driver removes that worker's folders, which nobody else
writes to. On Ctrl-C the driver kills the workers, waits for their deaths, and does the
same, so nothing partial is left and a rerun resumes.

Ray is imported here only, and only when a cluster run starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import GsasrError, InvalidRequest, UsageProblem
from .files import (
    capture_stderr,
    destination,
    link_exclusive,
    make_folder,
    reason,
    write_atomic,
)
from .jobs import Job, Request, Result, Runner, Settings, Status

MAX_ATTEMPTS = 3  # workers a file may kill before it fails
OBJECT_STORE_BYTES = 200 << 20  # for a local Ray started here: only paths and results move
_WAIT_S = 0.5  # longest block in ray.wait, so Ctrl-C is seen at once
_DEATH_WAIT_S = 10.0  # how long a killed worker may take to be reported dead


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide a Ray run is; None picks from the cluster's resources."""

    address: str | None = None  # None: RAY_ADDRESS, a `ray start`ed cluster here, else local
    workers: int | None = None  # None: as many as the cluster's nodes fit
    gpus_per_worker: float | None = None  # None: 1 if the cluster has GPUs, else 0
    cpus_per_worker: float | None = None  # None: 1 with GPUs; else 0.5 on nodes of <= 4 CPUs
    threads: int = 0  # torch threads per worker; 0: the worker's whole CPUs, at least 1
    depth: int = 2  # jobs outstanding per worker: one running, one waiting


def require_ray() -> Any:
    """The `ray` module; UsageProblem (exit 2) when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise UsageProblem('--engine ray needs Ray: pip install "gsasr[ray]"') from exc
    return ray


# ---------------------------------------------------------------- worker side


class StagedWriter:
    """`write_atomic` for a worker that may be killed: the bytes (and write_atomic's own
    temporary file) go to a folder private to this worker of this run, beside the output,
    then the finished file is linked into place (exclusive unless `overwrite`).

    The folder stays while outputs go to the same folder and is removed when the next one
    goes elsewhere; the driver removes the last one, and those of a dead worker.
    """

    def __init__(self, stage_name: str) -> None:
        self.stage_name = stage_name
        self.current: Path | None = None

    def __call__(
        self, path: Path, data: bytes | bytearray | memoryview, *, overwrite: bool = True
    ) -> None:
        name, path = Path(path), destination(Path(path))
        stage = path.parent / self.stage_name
        if self.current not in (None, stage):
            with contextlib.suppress(OSError):
                os.rmdir(self.current)
        make_folder(stage, str(name))  # each time: the output folder may have been replaced
        self.current = stage
        staged = stage / f"out{path.suffix}"
        try:
            try:
                write_atomic(staged, data, overwrite=True)
            except GsasrError as exc:  # name the output, not the staging file
                raise GsasrError(str(exc).replace(str(staged), str(name), 1)) from None
            try:
                if overwrite:
                    os.replace(staged, path)
                else:
                    link_exclusive(staged, path)
            except OSError as exc:
                raise GsasrError(f"{name}: cannot write ({reason(exc)})") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)


class UpscaleWorker:
    """The body of one Ray actor: a `Runner` built once, running one job at a time."""

    def __init__(self, req: Request, settings: Settings, stage_name: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        with contextlib.suppress(RuntimeError):  # only possible before any parallel work
            torch.set_num_interop_threads(1)
        self.runner = Runner(req, settings)
        self.runner.write = StagedWriter(stage_name)

    def start(self, check: bool) -> dict[str, Any]:
        """Where this worker runs; with `check`, the local engine's checks before any file
        (rasterizer, device, precision, weights path; the model loads on the first file).
        A problem comes back as {"error": message, "invalid": bool} for the driver."""
        import ray

        from .inference import check_rasterizer

        info: dict[str, Any] = {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}
        try:
            check_rasterizer(self.runner.settings.device)
            if check:
                self.runner.preflight()
        except GsasrError as exc:
            info |= {"error": str(exc), "invalid": isinstance(exc, InvalidRequest)}
        return info

    def run(self, job: Job) -> Result:
        """One job, as the local engine runs it."""
        return self.runner.run(job)


# ---------------------------------------------------------------- driver side


@dataclass
class _Actor:
    index: int
    handle: Any
    ready: bool = False
    dead: bool = False
    where: str = "starting"
    pid: int | None = None
    node: str | None = None
    outstanding: list[Any] = field(default_factory=list)  # job refs, in submission order
    last_folder: Path | None = None  # where its staging folder may still be


@dataclass
class _Task:
    actor: _Actor
    job: Job | None = None  # None: the actor's start call
    attempt: int = 1


class RayEngine:
    """Runs planned jobs on Ray actors: `start()` (or the first job that needs work)
    connects and starts the workers, `run(jobs)` yields a Result per job as they finish,
    `close()` stops the workers and removes what dead ones left. Use it as a context
    manager: leaving by an exception (Ctrl-C) kills the workers first."""

    def __init__(
        self,
        req: Request,
        settings: Settings,
        config: ClusterConfig = ClusterConfig(),
        *,
        worker: type[UpscaleWorker] = UpscaleWorker,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        _check_config(config, settings)
        self.ray = require_ray()
        self.req, self.settings, self.config = req, settings, config
        self.worker_cls = worker
        self.notice = on_notice or (lambda message: None)
        self.run_id = secrets.token_hex(8)
        self.local = Runner(req, settings)  # settles jobs that need no input on the driver
        self.actors: list[_Actor] = []
        self.pending: dict[Any, _Task] = {}
        self.retry: deque[tuple[Job, int]] = deque()
        self.started = False
        self.owns_connection = False
        self.workers = 0
        self.deaths = 0  # workers lost since a job last came back
        self.last_death = ""
        self.node_id: str | None = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(aborted=exc_type is not None)

    # ---- start

    def start(self, every_worker: bool = False) -> None:
        """Connect, size and start the workers, and wait until one is ready (or, with
        `every_worker`, all): a cluster without the resources asked for, a bad device or
        weights path fail here, before any file."""
        if self.started:
            return
        self.started = True
        self._connect()
        gpus, cpus, default, fit = self._size()
        self.gpus, self.cpus = gpus, cpus
        self.threads = self.config.threads or max(1, math.floor(cpus))
        self.workers = self.config.workers or default
        if self.workers > fit:
            self.notice(
                f"the Ray cluster fits {fit} workers of {cpus:g} CPU, {gpus:g} GPU now; "
                f"the other {self.workers - fit} start when resources free up"
            )
        for _ in range(self.workers):
            self._spawn()
        waited = time.monotonic()
        while not any(a.ready for a in self.actors) or (
            every_worker and sum(a.ready for a in self.actors) < self.workers
        ):
            if not self.pending:
                raise GsasrError(f"no Ray worker could start ({self.last_death})")
            for _ in self._wait_once():  # no job is out yet: only start calls return
                pass
            if waited and time.monotonic() - waited > 30:
                self.notice(f"waiting for Ray to place a worker ({cpus:g} CPU, {gpus:g} GPU)")
                waited = 0

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a library caller (or a test) connected already
            self.node_id = ray.get_runtime_context().get_node_id()
            return
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        saved = {s: signal.getsignal(s) for s in _SIGNALS}  # ray.init takes SIGTERM over
        try:
            address = self.config.address or os.environ.get("RAY_ADDRESS") or "auto"
            notes: list[str] = []  # Ray's C++ client logs each failed try to fd 2
            try:
                with capture_stderr(notes):
                    ray.init(address=self.config.address or "auto", **quiet)
            except ConnectionError:
                if self.config.address is not None or os.environ.get("RAY_ADDRESS"):
                    raise
                address = "a new local Ray instance"
                ray.init(
                    address="local",
                    include_dashboard=False,
                    object_store_memory=OBJECT_STORE_BYTES,
                    **quiet,
                )
        except Exception as exc:  # Ray raises many kinds here
            why = _first_line(_root_cause(exc))
            raise GsasrError(f"cannot connect to Ray at {address}: {why}") from exc
        finally:
            for s, handler in saved.items():
                if handler is not None:
                    signal.signal(s, handler)
        self.owns_connection = True
        self.node_id = ray.get_runtime_context().get_node_id()

    def _size(self) -> tuple[float, float, int, int]:
        """GPUs and CPUs per worker, the default number of workers (one per `threads` CPUs
        of each node, within its GPUs), and how many such workers the live nodes hold."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        node_cpus = [float(n.get("CPU", 0)) for n in nodes]
        node_gpus = [float(n.get("GPU", 0)) for n in nodes]
        gpus = self.config.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if max(node_gpus, default=0) >= 1 else 0.0
        cpus = self.config.cpus_per_worker
        if cpus is None:
            cpus = 1.0 if gpus > 0 or max(node_cpus, default=0) > 4 else 0.5
        threads = self.config.threads or max(1, math.floor(cpus))
        fit = default = 0
        for n_cpu, n_gpu in zip(node_cpus, node_gpus, strict=True):
            by_gpu = math.floor(n_gpu / gpus + 1e-9) if gpus > 0 else 1 << 30  # no limit
            fit += min(math.floor(n_cpu / cpus + 1e-9), by_gpu)
            default += min(math.floor(n_cpu / max(cpus, threads) + 1e-9), by_gpu)
        if fit == 0:
            raise UsageProblem(
                f"no node of the Ray cluster has {cpus:g} CPU"
                + (f" and {gpus:g} GPU" if gpus else "")
                + f" for a worker (its nodes: {_nodes_text(node_cpus, node_gpus)}); "
                "lower --cpus-per-worker or --gpus-per-worker"
            )
        return gpus, cpus, max(1, default), fit

    def _spawn(self) -> None:
        # Replace dead workers as long as work gets done; workers that die one after the
        # other with nothing done (a node without gsasr, a broken install) are not replaced.
        if self.deaths > 2 * self.workers + 1:
            return
        index = len(self.actors)
        settings = self.settings
        if settings.device == "auto" and not self.gpus:
            settings = replace(settings, device="cpu")  # Ray gave this worker no GPU
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        options |= {"max_restarts": 0, "max_task_retries": 0}
        env = {k: os.environ[k] for k in ("GSASR_RASTERIZER",) if k in os.environ}
        if env:
            options["runtime_env"] = {"env_vars": env}
        cls = self.ray.remote(self.worker_cls).options(**options)
        handle = cls.remote(self.req, settings, self._stage_name(index), self.threads)
        actor = _Actor(index, handle)
        self.actors.append(actor)
        self.pending[handle.start.remote(not settings.dry_run)] = _Task(actor)

    def _stage_name(self, index: int) -> str:
        return f".gsasr-{self.run_id}-{index}"

    # ---- run

    def run(self, jobs: Iterable[Job]) -> Iterator[Result]:
        """A Result per job, in the order they finish."""
        it = iter(jobs)
        exhausted = False
        while True:
            while self._room():
                if self.retry:
                    job, attempt = self.retry.popleft()
                else:
                    nxt = None if exhausted else next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    job, attempt = nxt, 1
                if self.local.settled(job):
                    yield self.local.run(job)
                    continue
                if not self.started:
                    self.start()
                self._submit(job, attempt)
            busy = any(t.job is not None for t in self.pending.values())
            if exhausted and not self.retry and not busy:
                return
            if not self.pending:
                raise GsasrError(f"every Ray worker died; the last: {self.last_death}")
            yield from self._wait_once()

    def _room(self) -> bool:
        if not self.started:
            return True
        return any(self._free(a) for a in self.actors)

    def _free(self, a: _Actor) -> bool:
        return a.ready and not a.dead and len(a.outstanding) < self.config.depth

    def _submit(self, job: Job, attempt: int) -> None:
        actor = min((a for a in self.actors if self._free(a)), key=lambda a: len(a.outstanding))
        ref = actor.handle.run.remote(_absolute(job))  # workers run in other folders
        actor.outstanding.append(ref)
        self.pending[ref] = _Task(actor, job, attempt)

    def _wait_once(self) -> Iterator[Result]:
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=_WAIT_S)
        for ref in done:
            task = self.pending.pop(ref, None)
            if task is None:  # dropped with its dead worker meanwhile
                continue
            try:
                value = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                yield from self._lost(task.actor, exc, ref, task)
                continue
            except self.ray.exceptions.RayError as exc:  # the worker's own code raised
                if task.job is None:
                    raise GsasrError(f"a Ray worker failed to start: {_first_line(exc)}") from exc
                task.actor.outstanding.remove(ref)
                yield _failed(task.job, f"the Ray worker raised {_first_line(exc)}")
                continue
            if task.job is None:
                self._started(task.actor, value)
                continue
            task.actor.outstanding.remove(ref)
            task.actor.last_folder = task.job.output.parent if task.job.output else None
            self.deaths = 0
            yield _as_planned(value, task.job)

    def _started(self, actor: _Actor, info: dict[str, Any]) -> None:
        if "error" in info:
            raise (InvalidRequest if info["invalid"] else GsasrError)(info["error"])
        actor.ready, actor.pid, actor.node = True, info["pid"], info["node"]
        here = actor.node == self.node_id
        actor.where = f"pid {actor.pid}" + ("" if here else f" on node {str(actor.node)[:8]}")

    def _lost(self, actor: _Actor, exc: Exception, ref: Any, task: _Task) -> Iterator[Result]:
        """A worker died: its jobs go back to the queue (the one it was running with one
        more attempt), its staging folders are removed, and a replacement starts."""
        actor.dead = True
        self.deaths += 1
        cause = _first_line(exc)
        self.last_death = f"worker {actor.index} ({actor.where}): {cause}"
        with contextlib.suppress(Exception):  # unreachable is not yet dead
            self.ray.kill(actor.handle, no_restart=True)
        tasks = [task if r == ref else self.pending.pop(r, None) for r in actor.outstanding]
        refs, actor.outstanding = actor.outstanding, []
        held = [(t.job, t.attempt) for t in tasks if t is not None and t.job is not None]
        jobs = [job for job, _ in held]
        requeue: list[tuple[Job, int]] = []
        for i, (job, tries) in enumerate(held):
            attempt = tries + (i == 0)  # the first was running; the others waited
            if attempt <= MAX_ATTEMPTS:
                requeue.append((job, attempt))
                continue
            why = f"a Ray worker died while upscaling it, {MAX_ATTEMPTS} times (the last: {cause})"
            yield _failed(job, why)
        self.retry.extendleft(reversed(requeue))
        self._confirm_dead([actor], [r for r in refs if r != ref])
        self._sweep(actor, jobs)
        if actor.ready:
            self.notice(
                f"Ray worker {actor.index} ({actor.where}) died ({cause}); "
                f"{len(requeue)} of its jobs go to other workers"
            )
        self._spawn()

    # ---- stop

    def close(self, aborted: bool = False) -> None:
        """Stop every worker and remove their staging folders; with `aborted` (Ctrl-C, an
        error) the workers may be mid-file: they are killed and their deaths awaited first."""
        if not self.started:
            return
        self.started = False
        live = [a for a in self.actors if not a.dead]
        for a in live:
            with contextlib.suppress(Exception):
                self.ray.kill(a.handle, no_restart=True)
        refs = [r for a in live for r in a.outstanding]
        if aborted:
            self._confirm_dead(live, refs)
        for a in live:
            jobs = [t.job for r in a.outstanding if (t := self.pending.get(r)) and t.job]
            self._sweep(a, jobs)
        self.pending.clear()
        if self.owns_connection:
            with contextlib.suppress(Exception):
                self.ray.shutdown()

    def _confirm_dead(self, actors: list[_Actor], refs: list[Any]) -> None:
        """Wait until killed workers are gone, so that none writes after the sweep: their
        outstanding calls resolve once Ray knows them dead, and a process on this node is
        waited for by its pid."""
        if refs:
            with contextlib.suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=_DEATH_WAIT_S)
        deadline = time.monotonic() + _DEATH_WAIT_S
        for a in actors:
            if a.pid is None or a.node != self.node_id:
                continue
            while not _gone(a.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def _sweep(self, actor: _Actor, jobs: list[Job]) -> None:
        """Remove the worker's staging folders: beside its last output and beside the
        outputs of the jobs it still had."""
        folders = {actor.last_folder} | {j.output.parent for j in jobs if j.output is not None}
        for folder in folders - {None}:
            assert folder is not None
            stage = folder / self._stage_name(actor.index)
            try:
                shutil.rmtree(stage)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.notice(f"{stage}: cannot remove ({reason(exc)})")


_SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s
)


def _check_config(config: ClusterConfig, settings: Settings) -> None:
    """Usage errors in the Ray options, before connecting."""
    if config.workers is not None and config.workers < 1:
        raise UsageProblem(f"--workers must be at least 1, got {config.workers}")
    for flag, value in (("--gpus-per-worker", config.gpus_per_worker),
                        ("--cpus-per-worker", config.cpus_per_worker)):  # fmt: skip
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageProblem(f"{flag} must be a number >= 0, got {value:g}")
    if config.cpus_per_worker is not None and config.cpus_per_worker <= 0:
        raise UsageProblem("--cpus-per-worker must be more than 0")
    device = settings.device
    if device.startswith("cuda:") and device != "cuda:0":
        raise UsageProblem(
            f"--device {device}: Ray gives each worker its GPUs as cuda:0; use --device cuda"
        )
    if device.startswith("cuda") and config.gpus_per_worker == 0:
        raise UsageProblem(f"--device {device} needs --gpus-per-worker above 0")
    if device == "cpu" and config.gpus_per_worker:
        raise UsageProblem("--device cpu and --gpus-per-worker disagree; give one of them")


def _absolute(job: Job) -> Job:
    """The job with absolute paths, for a worker whose working folder is not ours."""
    source = Path(os.path.abspath(job.source)) if job.source is not None else None
    output = Path(os.path.abspath(job.output)) if job.output is not None else None
    return replace(job, source=source, output=output)


def _as_planned(r: Result, job: Job) -> Result:
    """A worker's Result named with the job's paths as planned (relative ones stay relative),
    as the local engine reports them."""
    names = {}
    for planned in (job.source, job.output):
        if planned is not None and os.path.abspath(planned) != str(planned):
            names[os.path.abspath(planned)] = str(planned)
    if not names:
        return r

    def rename(text: str) -> str:
        for absolute in sorted(names, key=len, reverse=True):
            text = text.replace(absolute, names[absolute])
        return text

    r.input, r.output = job.name, str(job.output) if job.output is not None else r.output
    r.error = rename(r.error) if r.error is not None else None
    r.warnings = [rename(w) for w in r.warnings]
    return r


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a `raise ... from` chain (not of `__context__`: a failed
    local start must not be blamed on the failed search for a running cluster before it)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _failed(job: Job, error: str) -> Result:
    output = str(job.output) if job.output is not None else "<stdout>"
    return Result(job.name, output, Status.FAILED, error=f"{job.name}: {error}")


def _first_line(exc: BaseException) -> str:
    """One line for an exception; when its message embeds a traceback (Ray's connection
    errors do), the last `SomeError: reason` line of it, without the class name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    raised = [m.group(1) for ln in lines if (m := _RAISED.match(ln))]
    return (raised[-1] if raised else lines[0] if lines else type(exc).__name__)[:400]


_RAISED = re.compile(r"[\w.]*(?:Error|Exception): (.+)")


def _nodes_text(cpus: list[float], gpus: list[float]) -> str:
    text = ", ".join(f"{c:g} CPU {g:g} GPU" for c, g in zip(cpus, gpus, strict=True))
    return text or "none alive"


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False
