"""`gsasr` end to end: the happy path and every bad-input case of the core issue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gsasr_cli import __version__

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"


@pytest.fixture
def small_png(tmp_path: Path) -> Path:
    image = cv2.imread(str(EXAMPLE))[40:70, 30:70]  # 40x30
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), image)
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_version_from_the_installed_command():
    result = subprocess.run(["gsasr", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == f"gsasr {__version__}"
    result = subprocess.run(
        [sys.executable, "-m", "gsasr_cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_upscale_writes_the_default_name_beside_the_input(run_cli, small_png, capsys):
    code, out, err = run_cli(["upscale", str(small_png), "--scale", "3.7", "--device", "cpu"])
    assert code == 0, err
    assert out == ""  # results go to files, logs to stderr
    result = small_png.with_name("small_x3.7.png")
    image = cv2.imread(str(result))
    assert image.shape == (111, 148, 3)  # round(30 * 3.7), round(40 * 3.7)
    assert "40x30 -> 148x111" in err
    # The upscaled image resembles the input: shrinking it back is close to the original.
    back = cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA).astype(np.float64)
    original = cv2.imread(str(small_png)).astype(np.float64)
    assert np.abs(back - original).mean() < 6.0
    assert leftovers(small_png.parent) == []


def test_upscale_from_another_directory_with_explicit_output(
    run_cli, small_png, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", "big.jpg"])
    assert code == 0, err
    assert cv2.imread(str(elsewhere / "big.jpg")).shape == (60, 80, 3)


def test_integer_scale_names_without_decimals(run_cli, small_png, capsys):
    code, _, _ = run_cli(["upscale", str(small_png), "--scale", "2"])
    assert code == 0 and small_png.with_name("small_x2.png").exists()


@pytest.mark.parametrize("bad", ["0.5", "0", "-3", "abc", "nan", "inf"])
def test_bad_scale_is_a_usage_error(run_cli, small_png, capsys, bad):
    code, out, err = run_cli(["upscale", str(small_png), "--scale", bad])
    assert code == 2
    assert "--scale" in err and len(err.strip().splitlines()) == 1
    assert out == ""


def test_missing_file_is_a_usage_error(run_cli, tmp_path, capsys):
    code, _, err = run_cli(["upscale", str(tmp_path / "nope.png"), "-s", "2"])
    assert code == 2
    assert err.strip() == f"error: {tmp_path / 'nope.png'}: no such file or folder"


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.png", b"", "empty file"),
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image"),
        ("text.png", b"this is not an image\n", "not a readable image"),
    ],
)
def test_unreadable_images(run_cli, tmp_path, capsys, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = run_cli(["upscale", str(path), "-s", "2"])
    assert code == 1
    assert str(path) in err and reason in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


def test_truncated_jpeg(run_cli, small_png, tmp_path, capsys):
    ok, buf = cv2.imencode(".jpg", cv2.imread(str(small_png)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[:200])
    code, _, err = run_cli(["upscale", str(path), "-s", "2"])
    assert code == 1 and "cut.jpg" in err


def test_existing_output_is_refused_then_replaced_with_overwrite(run_cli, small_png, capsys):
    target = small_png.with_name("taken.png")
    target.write_bytes(b"keep me")
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(target)])
    assert code == 1 and "exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"keep me"
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(target), "--overwrite"])
    assert code == 0, err
    assert cv2.imread(str(target)).shape == (60, 80, 3)


def test_never_overwrites_the_input(run_cli, small_png, capsys):
    before = small_png.read_bytes()
    code, _, err = run_cli(
        ["upscale", str(small_png), "-s", "2", "-o", str(small_png), "--overwrite"]
    )
    assert code == 1 and "input" in err
    assert small_png.read_bytes() == before


def test_output_folders_that_do_not_exist_are_created(run_cli, small_png, tmp_path, capsys):
    target = tmp_path / "no" / "sub" / "x.png"
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(target)])
    assert code == 0, err
    assert cv2.imread(str(target)).shape == (60, 80, 3)
    # A dry run creates nothing, and says what it would write.
    dry = tmp_path / "dry" / "x.png"
    code, out, _ = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(dry), "--dry-run"])
    assert code == 0 and str(dry) in out and not (tmp_path / "dry").exists()


def test_output_folder_that_is_a_file(run_cli, small_png, tmp_path, capsys):
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(small_png / "x.png")])
    assert code == 1 and "a folder in its path is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_output_folder_without_write_permission(run_cli, small_png, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", str(locked / "x.png")])
    finally:
        locked.chmod(0o755)
    assert code == 1 and "cannot write" in err


def test_unsupported_output_format(run_cli, small_png, capsys):
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "-o", "out.gif"])
    assert code == 2 and ".gif" in err


def test_cuda_requested_without_cuda(run_cli, small_png, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2", "--device", "cuda"])
    assert code == 2 and "CUDA is not available" in err


def test_interrupted_write_leaves_no_partial_file(run_cli, small_png, capsys, monkeypatch):
    import gsasr_cli.files as files

    def interrupted(fd):  # Ctrl-C while the data is being flushed, before it is linked
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fsync", interrupted)
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2"])
    assert code == 130
    assert sorted(p.name for p in small_png.parent.iterdir()) == ["small.png"]
    monkeypatch.undo()
    code, _, err = run_cli(["upscale", str(small_png), "-s", "2"])  # a rerun completes
    assert code == 0 and (small_png.parent / "small_x2.png").is_file()


def test_info_reports_paths_and_weights(run_cli, capsys):
    code, out, _ = run_cli(["info"])
    assert code == 0
    assert "rasterizer (cpu) torch" in out
    sha = [line for line in out.splitlines() if line.startswith("weights sha256")][0]
    assert len(sha.split()[-1]) == 64
    assert re.search(r"^weights model \d+-block decoder, 4 Gaussians per LR pixel", out, re.M)


def test_info_describes_given_weights_and_fails_on_unusable_ones(run_cli, tmp_path):
    from gsasr_cli.model import GSASR, ModelConfig
    from gsasr_cli.weights_io import save_weights

    mine = tmp_path / "mine.safetensors"
    save_weights(GSASR(ModelConfig(decoder_blocks=3, grid=1)), mine, extra={"steps": "1234"})
    code, out, _ = run_cli(["info", "--weights", str(mine)])
    assert code == 0 and f"weights {mine}\n" in out
    assert "weights model 3-block decoder, 1 Gaussian per LR pixel" in out
    assert "1,234 training steps" in out
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights" * 10)
    code, out, err = run_cli(["info", "--weights", str(junk)])
    assert code == 1 and f"weights {junk}" in out  # the report, then the one problem
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {junk}: not a gsasr weights file")
    code, _, err = run_cli(["info", "--weights", str(tmp_path / "absent.safetensors")])
    assert code == 2 and "absent.safetensors: weights file not found" in err
