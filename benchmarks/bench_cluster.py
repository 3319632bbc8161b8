"""`--engine ray` against the local engine on this machine: throughput with 1 and 2 workers,
the driver's cost per file, and how many results per second one driver can take.

    python benchmarks/bench_cluster.py                       # everything, 10-15 minutes
    python benchmarks/bench_cluster.py --files 8 --repeats 1 --noop-files 300 --photo ''
    python benchmarks/bench_cluster.py --out benchmarks/results/cluster.md

Every engine runs the same planned batch (`jobs.plan`) of small photos (crops of
examples/grace_hopper.png, PNG) into a fresh output folder each time; figures are the
median of `--repeats` rounds, each running every engine in turn, so that a change in the
machine's load falls on all of them. The Ray rows use `cluster.RayEngine`, the code behind
`gsasr upscale --engine ray`, on a local Ray started here (all CPUs, workers of 0.5 CPU and
1 torch thread). As `gsasr upscale` does, every process has glibc unmap freed buffers at
once (`jobs.return_freed_memory`). Model loads and Ray's start are timed apart and left
out of the batch times (one warm-up round first). "driver CPU" is this process's CPU time (Ray's
threads in it included) per file.

The no-op rows replace the worker's upscale with an immediate "ok" result (no file is
opened or written; the driver still plans and checks each output): results per second at
the driver, the ceiling of one driver whatever the workers. "plan only" is the driver's
planning and existence check alone.

`--photo` (default: a validation photo if found) is upscaled once by the local engine at
`--photo-scale` to measure a real photo's time and output bytes as PNG and JPEG, for the
cost estimate in the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from machine import describe

from gsasr_cli.cluster import ClusterConfig, RayEngine, UpscaleWorker
from gsasr_cli.inference import Sizing
from gsasr_cli.jobs import (
    Job,
    Request,
    Result,
    Runner,
    Settings,
    Status,
    plan,
    return_freed_memory,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "grace_hopper.png"
VAL_PHOTO = ROOT.parent / "shared" / "data" / "val" / "sporco__kodim23.png"


class NoopWorker(UpscaleWorker):
    """A worker that answers every job at once: what remains is the driver and Ray."""

    def run(self, job: Job) -> Result:
        return Result(job.name, str(job.output), Status.OK)


def make_photos(folder: Path, n: int, side: int) -> Path:
    folder.mkdir(parents=True)
    photo = cv2.imread(str(EXAMPLE))
    h, w = photo.shape[:2]
    for i in range(n):
        y, x = (13 * i) % (h - side), (17 * i) % (w - side)
        cv2.imwrite(str(folder / f"img{i:04d}.png"), photo[y : y + side, x : x + side])
    return folder


def make_names(folder: Path, n: int) -> Path:
    """`n` empty .png files: planning opens no file, so their content does not matter."""
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"f{i:06d}.png").touch()
    return folder


class Timer:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_batch(results, n: int) -> None:
    results = list(results)
    statuses = [r.status for r in results]
    bad = [s for s in statuses if s is not Status.OK]
    errors = [r.error for r in results if r.error]
    if len(statuses) != n or bad:
        raise SystemExit(f"batch: {len(statuses)} results, {len(bad)} not ok: {errors[:2]}")


class Local:
    """The local engine: one Runner in this process with `threads` torch threads."""

    def __init__(self, src: Path, work: Path, scale: float, threads: int) -> None:
        self.src, self.threads = src, threads
        self.out = work / f"local{threads}"
        self.req = Request(Sizing.of(scale=scale), str(self.out) + "/")
        self.runner = Runner(self.req, Settings(device="cpu"))

    def start(self) -> None:
        torch.set_num_threads(self.threads)
        self.runner.load()

    def results(self):
        torch.set_num_threads(self.threads)
        return [self.runner.run(j) for j in plan([str(self.src)], self.req)]

    def close(self) -> None:
        pass


class Remote:
    """The Ray engine with `workers` workers of 0.5 CPU and 1 torch thread each."""

    def __init__(
        self, src: Path, work: Path, scale: float, workers: int, worker=UpscaleWorker
    ) -> None:
        self.src, self.workers = src, workers
        self.out = work / f"ray{workers}-{worker.__name__}"
        self.req = Request(Sizing.of(scale=scale), str(self.out) + "/")
        config = ClusterConfig(workers=workers, cpus_per_worker=0.5, threads=1)
        self.engine = RayEngine(self.req, Settings(device="cpu"), config, worker=worker)

    def start(self) -> None:
        self.engine.start(every_worker=True)

    def results(self):
        return self.engine.run(plan([str(self.src)], self.req))

    def close(self) -> None:
        self.engine.close()


def measure(engines: dict, n: int, repeats: int) -> dict:
    """Start each engine (timed), then per repeat run the batch on each in turn, so that a
    change in the machine's load falls on every engine alike; the first round warms up."""
    rows = {}
    for name, engine in engines.items():
        t = Timer()
        engine.start()
        rows[name] = {"startup": t.stop()[0], "walls": [], "cpus": []}
    try:
        for r in range(repeats + 1):
            for name, engine in engines.items():
                shutil.rmtree(engine.out, ignore_errors=True)
                t = Timer()
                run_batch(engine.results(), n)
                wall, cpu = t.stop()
                if r:
                    rows[name]["walls"].append(wall)
                    rows[name]["cpus"].append(cpu)
    finally:
        for engine in engines.values():
            engine.close()
    for row in rows.values():
        row["wall"], row["cpu"] = statistics.median(row["walls"]), statistics.median(row["cpus"])
    return rows


def plan_only(src: Path, work: Path, repeats: int) -> dict:
    n = len(list(src.iterdir()))
    req = Request(Sizing.of(scale=2), str(work / "plan") + "/")
    runner = Runner(req, Settings(device="cpu"))
    walls, cpus = [], []
    for _ in range(repeats):
        t = Timer()
        count = sum(1 for j in plan([str(src)], req) if not runner.settled(j))
        wall, cpu = t.stop()
        assert count == n
        walls.append(wall)
        cpus.append(cpu)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def photo_figures(photo: Path, scale: float, work: Path) -> list[str]:
    """One real photo through the local engine, 1 torch thread: wall and CPU seconds, and
    the output's bytes as PNG and as JPEG (quality 95)."""
    torch.set_num_threads(1)
    rows = []
    for ext in (".png", ".jpg"):
        out = work / f"photo_x{scale:g}{ext}"
        req = Request(Sizing.of(scale=scale), str(out))
        runner = Runner(req, Settings(device="cpu"))
        runner.load()
        (job,) = list(plan([str(photo)], req))
        t = Timer()
        result = runner.run(job)
        wall, cpu = t.stop()
        if result.status is not Status.OK:
            raise SystemExit(f"{photo}: {result.error}")
        w, h = result.output_size
        in_mp = result.input_size[0] * result.input_size[1] / 1e6
        size = out.stat().st_size
        rows.append(
            f"| {photo.name} | {result.input_size[0]}x{result.input_size[1]} | x{scale:g} "
            f"| {w}x{h} {ext[1:].upper()} | {wall:.1f} | {cpu:.1f} | {cpu / in_mp:.1f} "
            f"| {size / 1e6:.2f} | {size / (w * h):.3f} |"
        )
    return [
        "| photo | input | scale | output | wall s | CPU s | CPU s per input MP | MB "
        "| bytes per output px |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=24, help="photos in the batch")
    ap.add_argument("--side", type=int, default=96, help="their side in pixels")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noop-files", type=int, default=2000, help="jobs for the driver rows")
    ap.add_argument("--photo", default=str(VAL_PHOTO) if VAL_PHOTO.is_file() else "")
    ap.add_argument("--photo-scale", type=float, default=4.0)
    ap.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = ap.parse_args()

    import ray

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    def step(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    return_freed_memory()  # as `gsasr upscale` does in its process and in every worker
    load = os.getloadavg()
    machine = describe(torch.device("cpu"))  # before any run changes torch's threads
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        work = Path(tmp)
        src = make_photos(work / "photos", args.files, args.side)
        names = make_names(work / "names", args.noop_files)
        n = args.files
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            object_store_memory=200 << 20,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            step("local and ray engines, in turn")
            engines = {("local", t): Local(src, work, args.scale, t) for t in (1, 2)}
            engines |= {("ray", w): Remote(src, work, args.scale, w) for w in (1, 2)}
            rows = measure(engines, n, args.repeats)
            step("no-op workers")
            noop = measure(
                {w: Remote(names, work, 2.0, w, NoopWorker) for w in (1, 2)},
                args.noop_files,
                args.repeats,
            )
        finally:
            ray.shutdown()
        planned = plan_only(names, work, args.repeats)
        step("one photo")
        photo = photo_figures(Path(args.photo), args.photo_scale, work) if args.photo else []
    load_after = os.getloadavg()

    say("# gsasr upscale: local engine against --engine ray (bench_cluster.py)")
    say()
    say(f"machine: {machine} by default")
    say(f"{os.cpu_count()} CPUs; load average {load[0]:.2f} before, {load_after[0]:.2f} after")
    say(f"torch {torch.__version__}, ray {ray.__version__}, python {sys.version.split()[0]}")
    say(
        f"batch: {n} PNG photos of {args.side}x{args.side} at x{args.scale:g}; "
        f"median of {args.repeats} rounds after a warm-up round, engines in turn"
    )
    say()
    say("| engine | workers x torch threads | startup s | batch wall s | files/s "
        "| vs local, 1 thread | driver CPU ms/file |")  # fmt: skip
    say("|---|---|---|---|---|---|---|")
    local = {t: rows["local", t] for t in (1, 2)}
    remote = {w: rows["ray", w] for w in (1, 2)}
    base = n / local[1]["wall"]
    for t, row in local.items():
        say(
            f"| local | 1 x {t} | {row['startup']:.2f} (model) | {row['wall']:.2f} "
            f"| {n / row['wall']:.2f} | {n / row['wall'] / base:.2f}x "
            f"| {1000 * row['cpu'] / n:.1f} (all work) |"
        )
    for w, row in remote.items():
        say(
            f"| ray | {w} x 1 | {row['startup']:.2f} (workers) | {row['wall']:.2f} "
            f"| {n / row['wall']:.2f} | {n / row['wall'] / base:.2f}x "
            f"| {1000 * row['cpu'] / n:.2f} |"
        )
    say()
    m = args.noop_files
    say(f"Driver ceiling: {m} jobs (empty .png files), workers answer at once (no-op)")
    say()
    say("| engine | workers | wall s | results/s | driver CPU us/result |")
    say("|---|---|---|---|---|")
    say(
        f"| plan only (no workers) | - | {planned['wall']:.3f} | {m / planned['wall']:,.0f} "
        f"| {1e6 * planned['cpu'] / m:.0f} |"
    )
    for w, row in noop.items():
        say(
            f"| ray, no-op workers | {w} | {row['wall']:.2f} | {m / row['wall']:,.0f} "
            f"| {1e6 * row['cpu'] / m:.0f} |"
        )
    if photo:
        say()
        say("One real photo, local engine, 1 torch thread (cost-model inputs):")
        say()
        for line in photo:
            say(line)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
