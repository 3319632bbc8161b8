"""Issue #13 in the planner and the CLI: nothing lost, honest exit codes, pipes, conventions.

Each test names the item it guards. The image-I/O items (TIFF EXIF, bombs, bounded reads,
format limits, the writer, codec noise, frames, flattening) are in test_io_hardening.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"


def write(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.imread(str(EXAMPLE))[40 + seed : 40 + seed + h, 30 : 30 + w]
    assert cv2.imwrite(str(path), img)
    return path


def gsasr(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["gsasr", *args], capture_output=True, check=False, **kw)


# ------------------------------------------------------------ 2, 3: nothing lost


def test_2_an_output_that_is_an_input_of_the_run_is_refused(run_cli, tmp_path):
    photos = tmp_path / "photos"
    a_png, a_jpg = write(photos / "a.png"), write(photos / "a.jpg", seed=3)
    before = a_png.read_bytes()
    args = ["upscale", str(photos), "-s", "2", "--format", "png", "-o", str(photos) + "/"]
    code, _, err = run_cli([*args, "--overwrite"])
    assert code == 1 and "is an input of this run" in err
    assert a_png.read_bytes() == before and a_jpg.is_file()


def test_2_a_device_or_pipe_at_the_output_is_never_replaced(run_cli, tmp_path):
    """`--overwrite` used to move a file over a named pipe, a device node or a symlink to
    one (as root, `-o /dev/null --overwrite` replaced the system's /dev/null)."""
    src = write(tmp_path / "in" / "a.png")
    write(tmp_path / "in" / "b.png", seed=4)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "a.png")
    (tmp_path / "null.png").symlink_to(os.devnull)
    for target, kind in ((out / "a.png", "named pipe"), (tmp_path / "null.png", "device")):
        code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(target), "--overwrite"])
        assert code == 1 and f"{target}: cannot write (a {kind}, not a file" in err
    code, _, err = run_cli(["upscale", str(src.parent), "-s", "2", "-o", str(out), "--overwrite"])
    assert code == 1 and err.count("error:") == 1 and "named pipe" in err
    assert (out / "a.png").is_fifo() and cv2.imread(str(out / "b.png")).shape == (24, 32, 3)
    assert os.path.islink(tmp_path / "null.png") and sorted(os.listdir(out)) == ["a.png", "b.png"]


def test_2_a_symlinked_output_is_written_through(run_cli, tmp_path):
    """A link at the output path stays a link; the file it names gets the result (as
    `/dev/stdout` redirected to a file: as root, the link in /dev was replaced)."""
    src = write(tmp_path / "a.png")
    real = write(tmp_path / "renders" / "v1.png", seed=7)
    link = tmp_path / "current.png"
    link.symlink_to(Path("renders") / "v1.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(link), "--overwrite"])
    assert code == 0, err
    assert os.readlink(link) == str(Path("renders") / "v1.png")
    assert cv2.imread(str(real)).shape == (24, 32, 3)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "current.png", "renders"]
    assert os.listdir(real.parent) == ["v1.png"]


def test_2_write_atomic_never_replaces_a_pipe(tmp_path):
    from gsasr_cli.errors import GsasrError
    from gsasr_cli.files import write_atomic

    os.mkfifo(tmp_path / "p")
    with pytest.raises(GsasrError, match="a named pipe, not a file"):
        write_atomic(tmp_path / "p", b"data")
    assert (tmp_path / "p").is_fifo() and os.listdir(tmp_path) == ["p"]


def test_2_eval_reports_never_replace_an_input_or_each_other(run_cli, tmp_path):
    """`gsasr eval --json/--plot` used to overwrite whatever they named: an image being
    scored, the weights, a device. Refused before any work, exit 2."""
    from gsasr_cli.weights_io import default_weights_path

    img = write(tmp_path / "val" / "a.png", h=48, w=48)
    before = img.read_bytes()
    (tmp_path / "null.json").symlink_to(os.devnull)
    weights = str(default_weights_path())
    cases = [
        (["--json", str(img)], "is an input of this run"),
        (["--plot", str(tmp_path / "val" / ".." / "val" / "a.png")], "is an input of this run"),
        (["--json", weights], "is an input of this run"),
        (["--json", str(tmp_path / "r"), "--plot", str(tmp_path / "r")], "also given to --json"),
        (["--json", str(tmp_path / "null.json")], "a device, not a file"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(["eval", str(img.parent), "--scales", "2", *extra])
        assert code == 2 and message in err, (extra, err)
        assert "x2 a.png" not in err  # nothing was scored
    assert img.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["null.json", "val"]


def test_3_two_inputs_with_one_output_are_reported(run_cli, tmp_path):
    d1, d2 = write(tmp_path / "d1" / "x.png"), write(tmp_path / "d2" / "x.png", seed=5)
    out = tmp_path / "big"
    code, stdout, err = run_cli(["upscale", str(d1), str(d2), "-s", "2", "-o", str(out), "--json"])
    records = [json.loads(line) for line in stdout.splitlines()]
    assert code == 1 and [r["status"] for r in records] == ["ok", "failed"]
    assert f"also the output of {d1}" in records[1]["error"] and "also the output" in err
    # a.jpg + a.png converted to one format in one folder
    src = tmp_path / "mixed"
    write(src / "a.jpg"), write(src / "a.png", seed=2)
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "--format", "png", "-o", str(out)])
    assert code == 1 and "also the output of" in err and (out / "a.png").is_file()


def test_the_same_input_given_twice_is_done_once_and_skipped_once(run_cli, tmp_path):
    """`a.png a.png`, `dir dir/a.png`, `dir dir`: the repeat is a skip, not a clash (exit 0),
    and the file is upscaled once; two different files with one output still fail."""
    a = write(tmp_path / "p" / "a.png")
    write(tmp_path / "p" / "b.png", seed=3)
    out = tmp_path / "big"
    cases = [
        ([str(a), str(a), "-o", str(out)], 2),
        ([str(a.parent), str(a.parent / ".." / "p" / "a.png"), "-o", str(out)], 3),
        ([str(a.parent), str(a.parent), "-o", str(out)], 4),
        ([str(a), str(tmp_path / "p" / "." / "a.png")], 2),  # beside the input
    ]
    for args, n in cases:
        code, stdout, err = run_cli(["upscale", *args, "-s", "2", "--json", "--overwrite"])
        records = [json.loads(line) for line in stdout.splitlines()]
        statuses = [r["status"] for r in records]
        assert code == 0 and len(records) == n, (args, err)
        assert statuses.count("skipped") == n - len({r["output"] for r in records}), args
        skipped = [r for r in records if r["status"] == "skipped"]
        assert all(r["error"].endswith("; done once") for r in skipped), skipped
        assert "; done once" in err and "also the output" not in err
    assert sorted(os.listdir(out)) == ["a.png", "b.png"] and (tmp_path / "p" / "a_x2.png").is_file()
    code, stdout, err = run_cli(
        ["upscale", str(a), str(a), "-s", "2", "--dry-run", "-o", f"{tmp_path}/new/"]
    )
    assert code == 0 and len(stdout.splitlines()) == 1 and f"{a}: given twice; done once" in err


def test_3_the_readme_xargs_pipeline_reports_flattened_clashes(tmp_path):
    write(tmp_path / "p" / "one" / "x.jpg"), write(tmp_path / "p" / "two" / "x.jpg", seed=4)
    cmd = "find p -name '*.jpg' -print0 | sort -z | xargs -0 gsasr upscale -s 2 -o big/ --json"
    res = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True)
    statuses = [json.loads(ln)["status"] for ln in res.stdout.splitlines()]
    assert res.returncode == 123 and statuses == ["ok", "failed"]  # xargs: 123 = a run failed


# ------------------------------------------------------------ 4, 5, 14, 24: pipes


def test_4_a_file_input_goes_to_stdout_with_o_dash(tmp_path):
    src = write(tmp_path / "good.png")
    res = gsasr("upscale", str(src), "-s", "2", "-o", "-", "--format", "png")
    assert res.returncode == 0, res.stderr
    assert cv2.imdecode(np.frombuffer(res.stdout, np.uint8), 1).shape == (24, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png"]  # nothing beside it


def _drain(fd: int) -> threading.Thread:
    """Read a pty's master side until it closes (a full pty would block the writer)."""

    def loop() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_5_json_goes_to_stdout_when_stderr_is_a_terminal(tmp_path):
    write(tmp_path / "in" / "a.png")
    master, slave = pty.openpty()
    _drain(master)
    try:
        for extra in ([], ["--dry-run"]):
            res = subprocess.run(
                ["gsasr", "upscale", str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "o")]
                + ["--json", *extra],
                stdout=subprocess.PIPE,
                stderr=slave,
                timeout=120,
                check=False,
            )
            assert res.returncode == 0
            assert [json.loads(ln)["input"] for ln in res.stdout.splitlines()] == [
                str(tmp_path / "in" / "a.png")
            ]
    finally:
        os.close(master), os.close(slave)


def test_14_closed_and_broken_standard_streams(tmp_path):
    src = write(tmp_path / "a.png")
    closed_in = gsasr("upscale", "-", "-s", "2", "-o", str(tmp_path / "o.png"),
                      preexec_fn=lambda: os.close(0))  # fmt: skip
    assert closed_in.returncode == 1 and b"standard input is closed" in closed_in.stderr
    closed_out = gsasr("upscale", str(src), "-s", "2", "-o", "-", "--format", "png",
                       preexec_fn=lambda: os.close(1))  # fmt: skip
    assert (
        closed_out.returncode == 2
        and b"needs standard output, which is closed" in closed_out.stderr
    )
    with open("/dev/full", "wb") as full:
        res = subprocess.run(
            ["gsasr", "upscale", str(src), "-s", "2", "-o", str(tmp_path / "f.png"), "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert res.returncode == 1 and b"cannot write to standard output" in res.stderr
    assert b"Traceback" not in res.stderr
    for i in range(3):
        write(tmp_path / "many" / f"{i}.png", seed=i)
    cmd = f"gsasr upscale {tmp_path / 'many'} -s 2 -o {tmp_path / 'm'} --json | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert res.returncode == 141 and res.stderr.count("\n") <= 1 and "Traceback" not in res.stderr
    assert json.loads(res.stdout)["status"] == "ok"


def test_24_a_terminal_on_stdin_is_refused(tmp_path):
    master, slave = pty.openpty()
    _drain(master)
    try:
        res = subprocess.run(
            ["gsasr", "upscale", "-", "-s", "2", "-o", str(tmp_path / "o.png")],
            stdin=slave,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(master), os.close(slave)
    assert res.returncode == 2 and b"terminal" in res.stderr


# ------------------------------------------------------------ 6, 13: weights


@pytest.fixture
def weights_copy(tmp_path):
    from gsasr_cli.weights_io import default_weights_path

    path = default_weights_path()
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return tensors, meta


def test_6_weights_with_nan_are_refused(run_cli, tmp_path, weights_copy):
    tensors, meta = weights_copy
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "--weights", str(bad)])
    assert code == 1 and "NaN or Inf" in err and not (tmp_path / "a_x2.png").exists()


@pytest.mark.parametrize(
    "change",
    [{"grid": 0}, {"radius": 0}, {"n_feats": 200000}, {"n_resblocks": 10**7}, {"grid": 3}],
)
def test_13_weights_with_impossible_configs_are_one_line(run_cli, tmp_path, weights_copy, change):
    tensors, meta = weights_copy
    cfg = json.loads(meta["config"]) | change
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta | {"config": json.dumps(cfg)})
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "--weights", str(bad)])
    assert code == 1 and "not a gsasr weights file" in err and len(err.splitlines()) == 1


def test_13_a_small_file_naming_a_huge_config_costs_no_memory(tmp_path, weights_copy):
    """The model was built before the file's tensors were checked: 100 bytes asking for
    512 features, 128 blocks and 256 Gaussians a pixel took 3.9 GB and 27 s to refuse."""
    tensors, meta = weights_copy
    cfg = json.loads(meta["config"]) | {"n_feats": 512, "n_resblocks": 128, "grid": 8}
    bad = tmp_path / "huge.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad), metadata=meta | {"config": json.dumps(cfg)})
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from gsasr_cli.errors import GsasrError\n"
        "from gsasr_cli.weights_io import load_model\n"
        "try:\n"
        "    load_model(Path(sys.argv[1]))\n"
        "except GsasrError as exc:\n"
        "    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True)
    message, peak_mb = out.stdout.splitlines()
    assert "weights do not match the model (missing" in message
    assert int(peak_mb) < 1000  # the model alone would be 3.9 GB


def test_13_weights_of_integers_are_refused(run_cli, tmp_path, weights_copy):
    tensors, meta = weights_copy
    name = next(iter(tensors))
    bad = tmp_path / "int.safetensors"
    save_file(tensors | {name: tensors[name].to(torch.int8)}, str(bad), metadata=meta)
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "--weights", str(bad)])
    assert code == 1 and f"{name} holds torch.int8, not floating-point numbers" in err


def test_6_non_finite_output_fails_the_file(monkeypatch, tmp_path, run_cli):
    from gsasr_cli import tiling

    def nan_tiles(*args, **kwargs):
        res = real(*args, **kwargs)
        res.image[:] = np.nan
        return res

    real = tiling.upscale_tiled
    monkeypatch.setattr(tiling, "upscale_tiled", nan_tiles)
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2"])
    assert code == 1 and "non-finite" in err and not (tmp_path / "a_x2.png").exists()


# ------------------------------------------------------------ 9, 15, 18: usage, exit 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--scale", "5000"], "over the limit"),
        (["--scale", "1e9"], "over the limit"),
        (["--size", "100000x100000"], "over the limit"),
        (["--width", "99999999999999999999999"], "whole number of pixels"),
        (["--width", "8"], "shrink"),
        (["-s", "2", "--device", "tpu"], "--device tpu"),
        (["-s", "2", "--precision", "fp16", "--device", "cpu"], "CUDA"),
        (["-s", "2", "--weights", "/nonexistent.safetensors"], "not found"),
        (["-s", "2", "--background", "mauve-ish"], "not a colour"),
        (["-s", "2", "--name", "{nope}"], "--name"),
    ],
)
def test_9_18_impossible_requests_exit_2_before_loading_the_model(
    run_cli, tmp_path, monkeypatch, args, message
):
    import gsasr_cli.api as api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), *args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_9_dry_run_plans_no_impossible_size(run_cli, tmp_path):
    src = write(tmp_path / "a.png")
    code, out, err = run_cli(["upscale", str(src), "--dry-run", "--scale", "1e4"])
    assert code == 2 and "over the limit" in err and out == ""


@pytest.mark.parametrize("value", ["bogus", "triton"])
def test_15_rasterizer_choice_is_checked_before_the_model(run_cli, tmp_path, monkeypatch, value):
    if value == "triton" and torch.cuda.is_available():
        pytest.skip("triton runs here")
    monkeypatch.setenv("GSASR_RASTERIZER", value)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2"])
    assert code == 2 and "GSASR_RASTERIZER" in err and len(err.strip().splitlines()) == 1


def test_18_usage_errors_fail_fast_without_torch(tmp_path):
    src = write(tmp_path / "a.png")
    code = (
        "import sys; from gsasr_cli.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "upscale", str(src), "-s", "2", "--device", "tpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.stdout.split() == ["False", "2"]


# ------------------------------------------------------------ 16, 17, 20, 21: files


def test_17_a_rerun_does_not_upscale_its_own_outputs(run_cli, tmp_path, monkeypatch):
    write(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    assert run_cli(["upscale", ".", "-r", "-s", "2", "-o", "up/"])[0] == 0
    code, _, err = run_cli(["upscale", ".", "-r", "-s", "2", "-o", "up/"])
    assert code == 0 and "skipped: up/a.png: exists" in err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png")) == [
        "a.png",
        "up/a.png",
    ]


def test_20_format_and_extension_must_agree_and_parents_are_made(run_cli, tmp_path):
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", "res.png", "--format", "jpg"])
    assert code == 2 and "disagree" in err
    deep = tmp_path / "new" / "sub" / "res.png"
    assert run_cli(["upscale", str(src), "-s", "2", "-o", str(deep)])[0] == 0 and deep.is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_20_dry_run_reports_outputs_that_cannot_be_written(run_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(
        ["upscale", str(src), "-s", "2", "-o", str(locked / "x.png"), "--dry-run"]
    )
    assert code == 1 and "not writable" in err


def test_20_dry_run_reports_a_parent_that_is_a_file(run_cli, tmp_path):
    src = write(tmp_path / "a.png")
    target = str(src / "x.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", target, "--dry-run"])
    assert code == 1 and "is a file" in err


def test_21_a_folder_walk_takes_gif_and_pnm(run_cli, tmp_path):
    """GIF and PNM are read formats; a folder walk used to leave them out without a word."""
    from PIL import Image as PILImage

    src = tmp_path / "in"
    colour = cv2.imread(str(write(src / "d.PNG")))
    PILImage.fromarray(colour[..., ::-1]).save(src / "a.gif")
    cv2.imwrite(str(src / "b.ppm"), colour)
    cv2.imwrite(str(src / "c.pgm"), colour[..., 0])
    (src / "notes.txt").write_text("not an image")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(tmp_path / "out")])
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "c.png", "d.PNG"]
    grey = cv2.imread(str(tmp_path / "out" / "c.png"), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (24, 32)  # grey stays grey


def test_4_a_pipe_input_without_o_is_a_usage_error(tmp_path):
    """`gsasr upscale <(cat a.png)` used to upscale, then fail to write /dev/fd/63_x2.png."""
    src = write(tmp_path / "a.png")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = gsasr("upscale", str(fifo), "-s", "2", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and b"a pipe, with no output name of its own" in out.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.png", "pipe"]
    writer = subprocess.Popen(["cp", str(src), str(fifo)])
    out = gsasr("upscale", str(fifo), "-s", "2", "-o", "big.png", cwd=tmp_path, timeout=60)
    writer.wait(timeout=60)
    assert out.returncode == 0, out.stderr
    assert cv2.imread(str(tmp_path / "big.png")).shape == (24, 32, 3)


def test_21_globs_ignore_case_and_match_paths(run_cli, tmp_path):
    src = tmp_path / "in"
    write(src / "UPPER.PNG"), write(src / "sub" / "low.png"), write(src / "sub" / "b.jpg")
    out = tmp_path / "out"

    def written(*globs: str) -> list[str]:
        args = ["upscale", str(src), "-r", "-s", "2", "-o", str(out), "--overwrite"]
        for g in globs:
            args += ["--glob", g]
        code, _, err = run_cli(args)
        assert code == 0, err
        found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        for p in out.rglob("*"):
            if p.is_file():
                p.unlink()
        return found

    assert written("*.png") == ["UPPER.PNG", "sub/low.png"]
    assert written("**/*.png") == ["UPPER.PNG", "sub/low.png"]
    assert written("sub/*.png") == ["sub/low.png"]
    args = ["upscale", str(src), "-r", "-s", "2", "-o", str(out), "--exclude", "sub"]
    assert run_cli(args)[0] == 0
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["UPPER.PNG"]


def test_16_an_output_written_meanwhile_is_not_replaced(run_cli, tmp_path, monkeypatch):
    """Two runs without --overwrite: the one that finishes second does not replace the
    first one's output (exclusive create), and says so."""
    from gsasr_cli import jobs

    src = write(tmp_path / "a.png")
    target = tmp_path / "a_x2.png"
    real = jobs.encode

    def racing_encode(*args, **kwargs):
        target.write_bytes(b"the other process's output")
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "encode", racing_encode)
    code, _, err = run_cli(["upscale", str(src), "-s", "2"])
    assert code == 1 and "output exists" in err
    assert target.read_bytes() == b"the other process's output"


# ------------------------------------------------------------ 25, 26, 27: conventions


def test_25_names_keep_the_scale_and_x1_is_a_copy(run_cli, tmp_path):
    src = write(tmp_path / "a.png")
    assert run_cli(["upscale", str(src), "-s", "1.0000001"])[0] == 0
    assert run_cli(["upscale", str(src), "-s", "1"])[0] == 0
    assert (tmp_path / "a_x1.0000001.png").is_file()
    assert np.array_equal(cv2.imread(str(tmp_path / "a_x1.png")), cv2.imread(str(src)))


def test_26_a_skipped_files_record_names_its_output(run_cli, tmp_path):
    write(tmp_path / "in" / "a.png")
    args = ["upscale", str(tmp_path / "in"), "-s", "2", "-o", str(tmp_path / "o"), "--json"]
    run_cli(args)
    code, out, _ = run_cli(args)
    record = json.loads(out)
    assert code == 0 and record["status"] == "skipped"
    assert record["output"] == str(tmp_path / "o" / "a.png")


def test_26_help_shows_defaults_and_plain_metavars(run_cli):
    code, out, _ = run_cli(["upscale", "--help"])
    assert code == 0 and "[default: <stem>_x<scale>.<ext>" in out
    assert "<bool>" not in out and "<list[str]>" not in out and "INPUT..." in out


def test_27_quiet_skip_existing_templates_fit_and_threads(run_cli, tmp_path):
    src = write(tmp_path / "a.png")  # 16x12
    code, _, err = run_cli(["upscale", str(src), "--fit", "40x40", "-q", "--threads", "1"])
    assert code == 0 and err == ""
    assert cv2.imread(str(tmp_path / "a_fit40x40.png")).shape == (30, 40, 3)
    code, _, err = run_cli(["upscale", str(src), "--fit", "40x40", "--skip-existing"])
    assert code == 0 and "skipped" in err
    code, _, _ = run_cli(["upscale", str(src), "-s", "2", "--name", "big_{stem}{ext}"])
    assert code == 0 and (tmp_path / "big_a.png").is_file()


def test_27_symlinked_folders_are_followed_only_when_asked(run_cli, tmp_path):
    real = tmp_path / "real"
    write(real / "x.png")
    src = tmp_path / "in"
    write(src / "a.png")
    (src / "link").symlink_to(real, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)
    out = tmp_path / "out"
    assert run_cli(["upscale", str(src), "-r", "-s", "2", "-o", str(out)])[0] == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a.png"]
    args = ["upscale", str(src), "-r", "-s", "2", "-o", str(out), "--follow-symlinks"]
    code, _, err = run_cli(args)
    assert code == 0, err
    assert (out / "link" / "x.png").is_file()


# ------------------------------------------------------------ found by a later audit


def test_11_over_long_path_parts_are_one_line_and_the_batch_goes_on(run_cli, tmp_path):
    good = write(tmp_path / "good.png")
    long_name = "q" * 300
    code, _, err = run_cli(["upscale", str(tmp_path / f"{long_name}.png"), str(good), "-s", "2",
                            "-o", str(tmp_path / "out") + "/"])  # fmt: skip
    assert code == 2 and "no such file or folder" in err and "standard output" not in err
    code, _, err = run_cli(
        ["upscale", str(good), "-s", "2", "-o", str(tmp_path / f"{long_name}.png")]
    )
    assert code == 1 and "name too long" in err and len(err.strip().splitlines()) == 1
    other = write(tmp_path / "other.png", seed=2)
    args = ["upscale", str(good), str(other), "-s", "2", "-o", str(tmp_path / long_name) + "/"]
    code, _, err = run_cli(args)
    assert code == 1 and err.count("name too long") == 2 and "Traceback" not in err


def test_14_results_to_a_closed_stdout_are_refused_up_front(tmp_path):
    src = write(tmp_path / "a.png")
    res = gsasr("upscale", str(src), "-s", "2", "--json", preexec_fn=lambda: os.close(1))
    assert res.returncode == 2 and b"--json needs standard output" in res.stderr
    assert b"Traceback" not in res.stderr and not (tmp_path / "a_x2.png").exists()


def test_14_a_reader_that_leaves_mid_image_is_a_broken_pipe(tmp_path):
    """A write cut short is not success: `| head -c 10` on a 3 MB BMP exits 141."""
    src = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    cmd = f"gsasr upscale {src} -s 4 -o - --format bmp --threads 1 | head -c 10 > /dev/null"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert res.returncode == 141 and "wrote" not in res.stderr, res.stderr


@pytest.mark.parametrize("args", [["info"], ["--version"], ["upscale", "--help"]])
def test_14_printing_commands_into_a_closed_pipe_exit_141(args):
    res = subprocess.run(["bash", "-o", "pipefail", "-c", "gsasr " + " ".join(args) + " | true"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode in (0, 141) and res.stderr == ""
    assert res.returncode == 141 or args == ["--version"]  # a short line may beat `true`


@pytest.mark.parametrize("scale", ["1e308", "1e300"])
def test_9_astronomic_scales_are_usage_errors(run_cli, tmp_path, scale):
    src = write(tmp_path / "a.png")
    for extra in ([], ["--dry-run"]):
        code, _, err = run_cli(["upscale", str(src), "--scale", scale, *extra])
        assert code == 2 and "over the limit" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--threads", "99999"], "--threads"),
        (["--precision", "fp16", "--device", "cpu"], "needs a CUDA device"),
        (["--weights", "/nonexistent.safetensors"], "weights file not found"),
    ],
)
def test_18_more_usage_errors_fail_without_torch(tmp_path, args, message):
    src = write(tmp_path / "a.png")
    code = (
        "import sys; from gsasr_cli.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    res = subprocess.run([sys.executable, "-c", code, "upscale", str(src), "-s", "2", *args],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert res.stdout.split() == ["False", "2"] and message in res.stderr


def test_18_device_names_are_shown_as_typed(run_cli, tmp_path):
    src = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "--device", "cuda:x"])
    assert code == 2 and "--device cuda:x:" in err  # no emoji made of ":x:"


def test_19_control_characters_in_names_are_escaped(run_cli, tmp_path):
    esc, newline = write(tmp_path / "esc\x1b[31mred.png"), write(tmp_path / "new\nline.png")
    code, out, err = run_cli(["upscale", str(esc), str(newline), "-s", "2", "--dry-run"])
    assert code == 0 and "\x1b" not in err + out and "esc\\x1b[31mred" in out
    assert "new\\nline" in out and len(out.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "meta,message",
    [
        ({}, "no config in its metadata"),
        ({"config": "[1, 2]"}, "its config is not a JSON object"),
        ({"config": "{bad"}, "its config is not JSON"),
        ({"format": "other"}, "format 'other'"),
        ({"format": "gsasr-checkpoint-1"}, "a training checkpoint"),
        ({"extra_field": 1}, "unknown config field 'extra_field'"),
    ],
)
def test_13_weights_metadata_problems_are_said_in_words(run_cli, tmp_path, meta, message):
    from safetensors import safe_open

    from gsasr_cli.weights_io import default_weights_path

    src = default_weights_path()
    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
    if meta == {}:
        metadata.pop("config")
    elif "extra_field" in meta:
        metadata["config"] = json.dumps({**json.loads(metadata["config"]), **meta})
    else:
        metadata.update(meta)
    bad = tmp_path / "w.safetensors"
    save_file(load_file(str(src)), str(bad), metadata=metadata)
    img = write(tmp_path / "a.png")
    code, _, err = run_cli(["upscale", str(img), "-s", "2", "--weights", str(bad)])
    assert code == 1 and f"not a gsasr weights file ({message}" in err


def test_27_the_suffix_field_is_filled_in_folder_outputs(run_cli, tmp_path):
    src = write(tmp_path / "b.png")
    args = ["upscale", str(src), "-s", "2", "--name", "{stem}{suffix}_z{ext}"]
    code, _, err = run_cli([*args, "-o", str(tmp_path / "outd") + "/"])
    assert code == 0, err
    assert (tmp_path / "outd" / "b_x2_z.png").is_file()


def test_an_empty_existing_output_is_a_failure_not_a_finished_skip(run_cli, tmp_path):
    """A 0-byte file where an output goes is no result (gsasr writes atomically, so another
    tool or a killed run left it): a rerun says so and exits 1 instead of skipping it as
    done, leaves it alone, and still does the rest of the batch; --overwrite replaces it."""
    src = tmp_path / "in"
    write(src / "a.png")
    write(src / "b.png", seed=1)
    write(src / "c.png", seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"")  # empty: not done
    write(out / "c.png", seed=3)  # a real earlier result: skipped as before
    done = (out / "c.png").read_bytes()
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(out)])
    assert code == 1
    assert f"{out / 'a.png'}: exists but is empty" in err
    assert (out / "a.png").stat().st_size == 0
    assert cv2.imread(str(out / "b.png")).shape == (24, 32, 3)
    assert (out / "c.png").read_bytes() == done
    for single in (["--skip-existing"], []):
        code, _, err = run_cli(
            ["upscale", str(src / "a.png"), "-s", "2", "-o", str(out / "a.png"), *single]
        )
        assert code == 1 and "exists but is empty" in err
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(out), "--overwrite"])
    assert code == 0, err
    assert cv2.imread(str(out / "a.png")).shape == (24, 32, 3)


def test_symlink_loops_and_dangling_links_are_one_line_per_file(run_cli, tmp_path):
    """A symlink loop among the inputs or at an output crashed the whole run with a
    traceback (Path.resolve raises RuntimeError for a loop on Python 3.11); a symlink to a
    missing file at an output was skipped as "exists" after the work, so the result was
    dropped and the batch exited 0."""
    good = write(tmp_path / "good.png")
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "b.png").symlink_to(loop / "a.png")
    (loop / "a.png").symlink_to(loop / "b.png")
    code, _, err = run_cli(
        ["upscale", str(good), str(loop / "b.png"), "-s", "2", "-o", str(tmp_path / "lb") + "/"]
    )
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(loop / "b.png") in errors[0], err
    assert cv2.imread(str(tmp_path / "lb" / "good.png")).shape == (24, 32, 3)

    out = tmp_path / "out"
    out.mkdir()
    (out / "z1.png").symlink_to(out / "z2.png")
    (out / "z2.png").symlink_to(out / "z1.png")
    code, _, err = run_cli(["upscale", str(good), "-s", "2", "-o", str(out / "z1.png")])
    assert code == 1 and "Traceback" not in err and "leads to no file" in err

    src = tmp_path / "src"
    write(src / "s0.png")
    write(src / "s1.png", seed=1)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "s0.png").symlink_to(tmp_path / "nowhere" / "s0.png")
    code, stdout, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(dst), "--json"])
    records = {Path(r["input"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert code == 1 and records["s0.png"]["status"] == "failed"
    assert "leads to no file" in records["s0.png"]["error"]
    assert records["s0.png"]["input_size"] is None  # refused before the input was read
    assert records["s1.png"]["status"] == "ok" and (dst / "s0.png").is_symlink()
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(dst), "--overwrite"])
    assert code == 0, err
    assert not (dst / "s0.png").is_symlink() and cv2.imread(str(dst / "s0.png")) is not None


def test_an_extension_in_name_decides_the_format(run_cli, tmp_path):
    """`--name '{stem}.jpg'` wrote PNG bytes under .jpg, and `--format jpg --name
    '{stem}.tif'` JPEG bytes under .tif, both with exit 0; -o FILE with a clashing
    --format was already refused."""
    src = write(tmp_path / "a.png")

    def run(name: str, *extra: str) -> tuple[int, str]:
        code, _, err = run_cli(["upscale", str(src), "-s", "2", "-q", "--name", name, *extra])
        return code, err

    jpeg, png = b"\xff\xd8\xff", b"\x89PNG"
    assert run("{stem}.jpg", "-o", f"{tmp_path / 'fm'}/") == (0, "")
    assert (tmp_path / "fm" / "a.jpg").read_bytes()[:3] == jpeg
    assert run("{stem}_big.WEBP") == (0, "")
    assert (tmp_path / "a_big.WEBP").read_bytes()[8:12] == b"WEBP"
    code, err = run("{stem}.tif", "-o", f"{tmp_path / 'fm2'}/", "--format", "jpg")
    assert code == 2 and "disagree" in err and not (tmp_path / "fm2").exists()
    assert run("{stem}.JPG", "-o", f"{tmp_path / 'fm3'}/", "--format", "jpeg") == (0, "")
    assert (tmp_path / "fm3" / "a.JPG").read_bytes()[:3] == jpeg
    code, err = run("{stem}.gif")
    assert code == 2 and ".gif is read, not written" in err
    # A name that ends in its {ext} field, or in no format, keeps the input's format.
    assert run("{stem}.v2{ext}", "-o", f"{tmp_path / 'fm4'}/") == (0, "")
    assert (tmp_path / "fm4" / "a.v2.png").read_bytes()[:4] == png


def test_a_folder_that_cannot_be_listed_is_a_failure_not_silence(run_cli, tmp_path, monkeypatch):
    """A subfolder the walk could not list (permissions, an I/O error) was left out
    without a word: its images were never done and the run exited 0. (Root reads any
    folder, so the refusal is simulated.)"""
    src = tmp_path / "src"
    write(src / "a.png")
    write(src / "locked" / "b.png", seed=1)
    write(src / "z.png", seed=2)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == src / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["upscale", str(src), "-r", "-s", "2", "-o", str(out), "--json"])
    assert code == 1
    assert f"error: {src / 'locked'}: cannot list the folder (permission denied)" in err
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [
        ("a.png", "ok"), ("z.png", "ok"), ("locked", "failed"),  # a folder's files first
    ]  # fmt: skip
    assert records[2]["output"] == str(out / "locked")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "z.png"]


def test_with_follow_symlinks_a_link_to_nothing_is_reported(run_cli, tmp_path):
    """A followed link to a missing file, or in a loop, was left out without a word."""
    src = tmp_path / "src"
    write(src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "missing.png")
    (src / "loop1.png").symlink_to(src / "loop2.png")
    (src / "loop2.png").symlink_to(src / "loop1.png")
    os.mkfifo(src / "pipe")
    (src / "pipe.png").symlink_to(src / "pipe")  # a link to a pipe: not a file, skipped
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(tmp_path / "o1")])
    assert code == 0 and "gone" not in err  # links are not followed unless asked
    args = ["upscale", str(src), "-s", "2", "-o", str(tmp_path / "o2"), "--follow-symlinks"]
    code, _, err = run_cli(args)
    errors = sorted(line for line in err.splitlines() if line.startswith("error:"))
    assert code == 1 and errors == [
        f"error: {src / name}: a symbolic link that leads to no file (its target is missing, "
        "or a loop)"
        for name in ("gone.png", "loop1.png", "loop2.png")
    ]
    assert (tmp_path / "o2" / "a.png").is_file()


def test_what_is_no_finished_output_is_never_skipped(run_cli, tmp_path):
    """A batch skipped a folder or a named pipe at an output path as "exists" (exit 0):
    only a file with data is a finished result; the rest fail, --overwrite or not."""
    src = tmp_path / "src"
    for i, name in enumerate(("a", "b", "c")):
        write(src / f"{name}.png", seed=i)
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)
    os.mkfifo(out / "b.png")
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(out)])
    assert code == 1
    assert f"error: {out / 'a.png'}: a folder, not a file; not replaced" in err
    assert f"error: {out / 'b.png'}: cannot write (a named pipe, not a file; not replaced)" in err
    assert (out / "c.png").is_file() and (out / "a.png").is_dir()
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(out), "--overwrite"])
    assert code == 1 and "named pipe" in err and (out / "a.png").is_dir()
