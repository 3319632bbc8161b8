"""`gsasr upscale --engine ray` on a local two-CPU Ray: the local engine's files, exit codes
and resume, workers that die mid-file, Ctrl-C, and Ray missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gsasr_cli.cluster import ClusterConfig, RayEngine, UpscaleWorker
from gsasr_cli.inference import Sizing
from gsasr_cli.jobs import Request, Settings, plan

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"
WORKER_TITLE = "ray::UpscaleWorker"


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for this module, shut down at its end."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 << 20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def crop(y: int, x: int, h: int, w: int) -> np.ndarray:
    return cv2.imread(str(EXAMPLE))[y : y + h, x : x + w]


def photos(folder: Path, n: int, side: int) -> Path:
    for i in range(n):
        write(folder / f"p{i}.png", crop(7 * i, 5 * i, side, side + i))
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".*")]


def records(stdout: str) -> dict[str, dict]:
    out = {}
    for line in stdout.splitlines():
        r = json.loads(line)
        del r["seconds"]
        out[r["input"]] = r
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Formats, a sub-folder, alpha and grey: what the engines must write alike."""
    src = tmp_path_factory.mktemp("mixed") / "in"
    write(src / "a.png", crop(50, 40, 24, 32))
    write(src / "b.jpg", crop(100, 60, 20, 25))
    write(src / "sub" / "c.png", crop(10, 10, 15, 20))
    write(src / "d.webp", crop(0, 0, 17, 23))
    write(src / "e.tif", cv2.cvtColor(crop(30, 30, 16, 16), cv2.COLOR_BGR2GRAY))
    write(src / "f.png", cv2.cvtColor(crop(60, 60, 18, 14), cv2.COLOR_BGR2BGRA))
    return src


@pytest.fixture(scope="module")
def ray_run(ray_cluster, mixed, tmp_path_factory):
    """`mixed` upscaled once by each engine: (code, stdout, stderr, out folder) per engine."""
    from gsasr_cli.cli import main

    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path_factory.mktemp(engine) / "out"
        argv = ["upscale", str(mixed), "-r", "-s", "2.5", "-o", str(out), "--json"]
        argv += ["--engine", engine, "--threads", "1"]  # float rounding follows torch's threads
        runs[engine] = (*_main(main, argv), out)
    return runs


def _main(main, argv: list[str]) -> tuple[int, str, str]:
    """`gsasr` in this process, outside pytest's per-test capture (for module fixtures)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            return exc.code, out.getvalue(), err.getvalue()
    raise AssertionError("main() returned without an exit code")


def test_ray_writes_the_local_engine_s_files_byte_for_byte(ray_run):
    (lcode, lout, lerr, local), (rcode, rout, rerr, ray_out) = ray_run["local"], ray_run["ray"]
    assert lcode == 0, lerr
    assert rcode == 0, rerr
    assert sorted(tree(local)) == ["a.png", "b.jpg", "d.webp", "e.tif", "f.png", "sub/c.png"]
    assert tree(ray_out) == tree(local)  # no hidden staging folder either
    ray_records, local_records = records(rout), records(lout)
    for r in local_records.values():
        r["output"] = r["output"].replace(str(local), str(ray_out))
    assert ray_records == local_records  # the same --json fields, in completion order
    assert "upscaled 6, skipped 0, failed 0 of 6" in rerr


def test_a_rerun_skips_everything(ray_run, mixed, run_cli, capsys):
    out = ray_run["ray"][3]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, stdout, err = run_cli(
        ["upscale", str(mixed), "-r", "-s", "2.5", "-o", str(out), "--engine", "ray", "--json"]
    )
    assert code == 0, err
    assert {r["status"] for r in records(stdout).values()} == {"skipped"}
    assert "upscaled 0, skipped 6, failed 0 of 6" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_bad_file_fails_alone(ray_cluster, tmp_path, run_cli, capsys, monkeypatch):
    src = photos(tmp_path / "in", 3, 20)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (src / "empty.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # relative paths: the workers run in another folder
    argv = ["upscale", "in", "-s", "2", "-o", "out", "--engine", "ray", "--workers", "2"]
    code, stdout, err = run_cli([*argv, "--json"])
    assert code == 1
    errors = sorted(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert [e.split(":")[1] for e in errors] == [" in/bad.png", " in/empty.jpg"], err
    local_err = run_cli(["upscale", "in", "-s", "2", "-o", "local", "--threads", "1"])[2]
    assert errors == sorted(ln for ln in local_err.splitlines() if ln.startswith("error:"))
    assert {(r["input"], r["output"], r["status"]) for r in records(stdout).values()} == {
        ("in/bad.png", "out/bad.png", "failed"),
        ("in/empty.jpg", "out/empty.jpg", "failed"),
        *((f"in/p{i}.png", f"out/p{i}.png", "ok") for i in range(3)),
    }
    assert sorted(tree(tmp_path / "out")) == ["p0.png", "p1.png", "p2.png"]
    assert "upscaled 3, skipped 0, failed 2 of 5" in err


def _descendants() -> dict[int, str]:
    """This process's descendants (Ray's processes included) by pid: their command line."""
    parent, title = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    mine, grew = {os.getpid()}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in mine and p not in mine}
        mine |= new
        grew = bool(new)
    return {p: title[p] for p in mine if p != os.getpid()}


def test_a_worker_killed_mid_run_is_replaced(ray_cluster, tmp_path, run_cli, capsys):
    src = photos(tmp_path / "in", 8, 64)
    out, local = tmp_path / "out", tmp_path / "local"
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            done = out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())
            busy = [p for p, t in _descendants().items() if t.startswith(WORKER_TITLE + ".run")]
            if done and busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    argv = ["upscale", str(src), "-s", "3", "-o", str(out), "--threads", "1", "--json"]
    code, stdout, err = run_cli([*argv, "--engine", "ray", "--workers", "2"])
    killer.join(5)
    assert killed, "no worker was killed: the run ended first"
    assert code == 0, err
    assert "died" in err and "go to other workers" in err
    assert len(records(stdout)) == 8  # one record per file, none twice
    assert run_cli(argv[:-1] + ["-o", str(local)])[0] == 0
    assert tree(out) == tree(local)  # every file, byte for byte, and no staging folder


class DiesMidWrite(UpscaleWorker):
    """Dies (os._exit) halfway through writing its first output, once per run folder,
    leaving what a SIGKILL there leaves: a partial temporary file in its staging folder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        staged = self.runner.write

        def write(path: Path, data: bytes, *, overwrite: bool = True) -> None:
            try:
                os.close(os.open(path.parent.parent / "died", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return staged(path, data, overwrite=overwrite)
            stage = path.parent / staged.stage_name
            stage.mkdir()
            (stage / ".gsasr-0badc0de.part").write_bytes(data[: len(data) // 2])
            os._exit(1)

        self.runner.write = write


def test_a_worker_dying_mid_write_leaves_no_partial_file(ray_cluster, tmp_path):
    src = photos(tmp_path / "in", 4, 24)
    out = tmp_path / "out"
    out.mkdir()
    other = out / ".gsasr-12345678.part"  # another writer's temporary file: not ours to remove
    other.write_bytes(b"someone else's")
    req = Request(Sizing.of(scale=2), str(out))
    notices: list[str] = []
    module = sys.modules[__name__]  # workers cannot import this test module: send it by value
    ray_cluster.cloudpickle.register_pickle_by_value(module)
    try:
        with RayEngine(
            req, Settings(), ClusterConfig(workers=2), worker=DiesMidWrite, on_notice=notices.append
        ) as engine:
            results = list(engine.run(plan([str(src)], req)))
    finally:
        ray_cluster.cloudpickle.unregister_pickle_by_value(module)
    assert (tmp_path / "died").exists()
    assert any("died" in n for n in notices), notices
    assert sorted(r.status.value for r in results) == ["ok"] * 4
    assert sorted(tree(out)) == [".gsasr-12345678.part", "p0.png", "p1.png", "p2.png", "p3.png"]
    assert hidden(out) == [".gsasr-12345678.part"]


def test_ctrl_c_stops_the_run_and_a_rerun_resumes(ray_cluster, tmp_path, run_cli, capsys):
    src = photos(tmp_path / "in", 10, 64)
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    argv = ["upscale", str(src), "-s", "3", "-o", str(out), "--engine", "ray", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gsasr_cli", *argv, "--ray-address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background of a script inherits
        # SIGINT ignored, and gsasr (like any program) then rightly ignores Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "interrupted"
    done = sorted(p.name for p in out.iterdir())
    assert 0 < len(done) < 10 and hidden(out) == [], done  # nothing partial, no staging
    for name in done:
        assert cv2.imread(str(out / name)).shape == (192, 192 + 3 * int(name[1:-4]), 3)
    code, _, err = run_cli(argv)
    assert code == 0, err
    assert f"upscaled {10 - len(done)}, skipped {len(done)}, failed 0 of 10" in err
    assert hidden(out) == []


def test_a_cluster_without_the_gpus_asked_for_is_a_usage_error(
    ray_cluster, tmp_path, run_cli, capsys
):
    src = photos(tmp_path / "in", 1, 16)
    code, _, err = run_cli(
        ["upscale", str(src), "-s", "2", "-o", str(tmp_path / "o"), "--engine", "ray"]
        + ["--gpus-per-worker", "1"]
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "error: no node of the Ray cluster has 1 CPU and 1 GPU for a worker "
        "(its nodes: 2 CPU 0 GPU); lower --cpus-per-worker or --gpus-per-worker"
    ]


def test_without_ray_the_ray_engine_is_a_usage_error(tmp_path, run_cli, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    src = photos(tmp_path / "in", 1, 16)
    code, out, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(tmp_path / "o")] + [
        "--engine", "ray"
    ])  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ['error: --engine ray needs Ray: pip install "gsasr[ray]"']
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers needs --engine ray"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --engine ray"),
        (["--engine", "ray", "-o", "-", "--format", "png"], "for - use --engine local"),
        (["--engine", "ray", "--device", "cuda:1"], "Ray gives each worker its GPUs as cuda:0"),
        (["--engine", "ray", "--cpus-per-worker", "0"], "--cpus-per-worker must be more than 0"),
    ],
)
def test_ray_options_usage_errors(tmp_path, run_cli, capsys, extra, message):
    src = photos(tmp_path / "in", 1, 16) / "p0.png"
    code, _, err = run_cli(["upscale", str(src), "-s", "2", *extra])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err
