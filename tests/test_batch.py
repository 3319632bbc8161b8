"""Scripting `gsasr upscale`: folders, pipelines, sizes, formats, metadata, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def small(h: int = 12, w: int = 16) -> np.ndarray:
    return cv2.imread(str(EXAMPLE))[50 : 50 + h, 40 : 40 + w]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    write(src / "a.png", small())
    write(src / "b.jpg", small(10, 14))
    write(src / "sub" / "c.png", small(9, 11))
    write(src / ".hidden.png", small())
    write(src / "._a.png", small())
    (src / "notes.txt").write_text("not an image")
    return src


def test_folder_needs_an_output_folder(run_cli, folder, capsys):
    code, _, err = run_cli(["upscale", str(folder), "-s", "2"])
    assert code == 2 and "-o DIR" in err


def test_folder_mirrors_the_tree_and_skips_hidden_files(run_cli, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["upscale", str(folder), "-s", "2", "-o", str(out), "-r"])
    assert code == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.jpg", "sub/c.png"]
    assert cv2.imread(str(out / "sub" / "c.png")).shape == (18, 22, 3)
    assert "upscaled 3, skipped 0, failed 0 of 3" in err
    # Without --recursive only the top level; a rerun skips what exists (exit 0).
    code, _, err = run_cli(["upscale", str(folder), "-s", "2", "-o", str(out)])
    assert code == 0 and "skipped 2" in err


def test_glob_selects_files(run_cli, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(
        ["upscale", str(folder), "-s", "2", "-o", str(out), "-r", "--glob", "*.jpg"]
    )
    assert code == 0
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["b.jpg"]


def test_bad_files_fail_alone_and_the_batch_goes_on(run_cli, folder, tmp_path, capsys):
    good = cv2.imencode(".jpg", small())[1].tobytes()
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("hello")
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    out = tmp_path / "out"
    code, stdout, err = run_cli(["upscale", str(folder), "-s", "2", "-o", str(out), "--json"])
    assert code == 1
    records = {Path(r["input"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert {k for k, r in records.items() if r["status"] == "ok"} == {"a.png", "b.jpg"}
    assert {k for k, r in records.items() if r["status"] == "failed"} == {
        "corrupt.png",
        "zero.png",
        "text.png",
        "cut.jpg",
    }
    assert "empty file" in records["zero.png"]["error"]
    for name in ("corrupt.png", "zero.png", "text.png", "cut.jpg"):
        assert name in err  # each failure is reported on stderr, one line
        assert not (out / name).exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]  # no partial files


def test_json_record_fields(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", small())
    code, stdout, _ = run_cli(["upscale", str(src), "--size", "40x20", "--json"])
    assert code == 0
    (record,) = [json.loads(line) for line in stdout.splitlines()]
    assert record["status"] == "ok" and record["error"] is None
    assert record["input_size"] == [16, 12] and record["output_size"] == [40, 20]
    assert record["scale"] == pytest.approx([2.5, 20 / 12])
    assert record["output"].endswith("x_40x20.png") and record["device"] == "cpu"
    assert set(record) >= {"input", "output", "tile", "seconds"}
    assert cv2.imread(record["output"]).shape == (20, 40, 3)


def test_json_records_are_strict_utf8_for_names_that_are_not(run_cli, tmp_path):
    """A file name that is not UTF-8 (here the byte 0xff) must not put lone surrogates
    (\\udcff) in --json lines, which strict parsers reject: the names read with U+FFFD and
    carry their exact bytes in base64; a failure's message too is clean UTF-8."""
    import base64
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    good = os.fsencode(folder) + b"/ok\xff.png"
    bad = os.fsencode(folder) + b"/bad\xfe.png"
    ok, buf = cv2.imencode(".png", small())
    assert ok
    with open(good, "wb") as f:
        f.write(buf.tobytes())
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["upscale", str(folder), "-s", "2", "-o", str(out), "--json"])
    assert code == 1
    assert "bad\\xfe.png: not a readable image" in err  # the byte, as a strict stream can
    assert "\\ud" not in stdout  # no escaped surrogate anywhere
    records = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        records[base64.b64decode(record["input_bytes"])] = record
    assert set(records) == {good, bad}
    assert records[good]["status"] == "ok" and records[good]["input"].endswith("ok\ufffd.png")
    written = base64.b64decode(records[good]["output_bytes"])
    assert written == os.fsencode(out) + b"/ok\xff.png" and os.path.isfile(written)
    assert records[bad]["status"] == "failed" and "bad\ufffd.png" in records[bad]["error"]
    assert "input_bytes" not in json.loads(  # a UTF-8 name has no bytes field
        run_cli(["upscale", str(write(tmp_path / "é.png", small())), "-s", "2", "--json"])[1]
    )


@pytest.mark.parametrize(
    "flag,value,shape",
    [("--width", "40", (30, 40)), ("--height", "30", (30, 40)), ("--size", "33x17", (17, 33))],
)
def test_width_height_and_size(run_cli, tmp_path, capsys, flag, value, shape):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), flag, value, "-o", str(tmp_path / "y.png")])
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "y.png")).shape[:2] == shape


@pytest.mark.parametrize(
    "args",
    [[], ["-s", "2", "--width", "10"], ["--size", "10"], ["--size", "0x5"], ["--width", "0"]],
)
def test_sizing_must_be_exactly_one_and_valid(run_cli, tmp_path, capsys, args):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), *args])
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_batch_where_the_size_fits_some_files_exits_1_not_2(run_cli, tmp_path):
    """Exit 2 says the request cannot work; when it worked for some files of a batch, the
    others are failed files (1), each on its line; when it fits none, still 2."""
    write(tmp_path / "in" / "narrow.png", small(12, 16))
    write(tmp_path / "in" / "wide.png", small(12, 40))
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["upscale", str(tmp_path / "in"), "--width", "32", "-o", str(out), "--json"]
    )
    statuses = {Path(r["input"]).name: r["status"] for r in map(json.loads, stdout.splitlines())}
    assert code == 1 and statuses == {"narrow.png": "ok", "wide.png": "failed"}, err
    assert "wide.png" in err and "shrink" in err and os.listdir(out) == ["narrow.png"]
    code, _, err = run_cli(["upscale", str(tmp_path / "in"), "--width", "32", "-o", str(out)])
    assert code == 1 and "wide.png" in err  # the rerun skips narrow.png: still 1
    code, _, err = run_cli(
        ["upscale", str(tmp_path / "in"), "--width", "8", "-o", str(tmp_path / "o2")]
    )
    assert code == 2 and err.count("shrink") == 2 and not (tmp_path / "o2").exists()


def test_a_size_that_would_shrink_is_a_usage_error_naming_the_file(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), "--width", "8"])
    assert code == 2 and "shrink" in err and str(src) in err
    assert len(err.strip().splitlines()) == 1


def test_dry_run_touches_nothing(run_cli, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["upscale", str(folder), "-s", "3", "-o", str(out), "-r", "--dry-run"]
    )
    assert code == 0
    assert not out.exists()
    lines = stdout.strip().splitlines()
    assert len(lines) == 3 and any("c.png (11x9) ->" in ln and "(33x27)" in ln for ln in lines)


def test_stdin_to_stdout_pipeline(tmp_path):
    data = cv2.imencode(".jpg", small())[1].tobytes()
    result = subprocess.run(
        ["gsasr", "upscale", "-", "-s", "2", "-o", "-", "--format", "png"],
        input=data,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    image = cv2.imdecode(np.frombuffer(result.stdout, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (24, 32, 3)


def test_stdin_garbage_fails_cleanly():
    result = subprocess.run(
        ["gsasr", "upscale", "-", "-s", "2", "-o", "-", "--format", "png"],
        input=b"garbage" * 10,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().strip() == (
        "error: <stdin>: not a readable image (corrupt, truncated or unsupported format)"
    )


def test_stdout_needs_format_and_a_non_terminal(run_cli, tmp_path, capsys, monkeypatch):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", "-"])
    assert code == 2 and "--format" in err
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", "-", "--format", "png"])
    assert code == 2 and "terminal" in err


def test_no_input_matched(run_cli, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["upscale", str(tmp_path / "empty"), "-s", "2", "-o", str(tmp_path)])
    assert code == 2 and "no input image matched" in err


def test_sixteen_bit_grey_and_alpha_survive(run_cli, tmp_path, capsys):
    deep = small().astype(np.uint16) * 257
    grey = cv2.cvtColor(small(), cv2.COLOR_BGR2GRAY)
    rgba = np.dstack([small(), np.full((12, 16), 128, np.uint8)])
    rgba[:, :4, 3] = 0
    for name, image in (("deep.png", deep), ("grey.png", grey), ("rgba.png", rgba)):
        write(tmp_path / name, image)
    for name in ("deep.png", "grey.png", "rgba.png"):
        code, _, err = run_cli(["upscale", str(tmp_path / name), "-s", "2"])
        assert code == 0, err
    out = cv2.imread(str(tmp_path / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (24, 32, 3)
    assert cv2.imread(str(tmp_path / "grey_x2.png"), cv2.IMREAD_UNCHANGED).shape == (24, 32)
    alpha = cv2.imread(str(tmp_path / "rgba_x2.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    assert alpha.shape == (24, 32) and alpha[:, :6].max() <= 10 and alpha[:, 10:].min() >= 120
    code, _, _ = run_cli(
        [
            "upscale",
            str(tmp_path / "rgba.png"),
            "-s",
            "2",
            "--alpha",
            "model",
            "-o",
            str(tmp_path / "m.png"),
        ],
    )
    assert code == 0
    assert cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED).shape == (24, 32, 4)


def test_exif_orientation_applied_and_metadata_copied(run_cli, tmp_path, capsys):
    rgb = cv2.cvtColor(small(), cv2.COLOR_BGR2RGB)  # 16 wide, 12 tall as stored
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    exif[0x010F] = "TestCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "photo.jpg"
    PILImage.fromarray(rgb).save(src, quality=95, exif=exif.tobytes(), icc_profile=icc)
    for ext in (".jpg", ".png", ".webp", ".tif"):
        dst = tmp_path / f"photo_x2{ext}"
        code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(dst)])
        assert code == 0, err
        with PILImage.open(dst) as out:
            assert out.size == (24, 32), ext  # upright: 12 wide, 16 tall, doubled
            exif = out.getexif()
            assert exif[0x0112] == 1 and exif[0x010F] == "TestCam", ext
            assert out.info["icc_profile"] == icc, ext


def test_spaces_and_non_ascii_paths(run_cli, tmp_path, capsys):
    src = write(tmp_path / "mis fotos" / "año 画像.png", small())
    out = tmp_path / "salida ü"
    out.mkdir()
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", str(out)])
    assert code == 0, err
    assert (out / "año 画像.png").is_file()


def test_interrupt_in_a_batch_leaves_no_partial_file(
    run_cli, folder, tmp_path, capsys, monkeypatch
):
    import gsasr_cli.files as files

    real_link, calls = files.os.link, []

    def link_then_interrupt(src, dst):
        if calls:
            raise KeyboardInterrupt
        calls.append(dst)
        real_link(src, dst)

    monkeypatch.setattr(files.os, "link", link_then_interrupt)
    out = tmp_path / "out"
    code, _, err = run_cli(["upscale", str(folder), "-s", "2", "-o", str(out), "-r"])
    assert code == 130 and "upscaled 1, skipped 0, failed 0 before the interrupt" in err
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [str(p) for p in written] == [str(calls[0])]  # the finished one, nothing partial


def test_tile_option_gives_the_same_image_and_is_reported(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", cv2.imread(str(EXAMPLE))[:70, :90])
    outputs = {}
    for tile in ("0", "32", "auto"):
        dst = tmp_path / f"t{tile}.png"
        code, stdout, _ = run_cli(
            ["upscale", str(src), "-s", "3.7", "-o", str(dst), "--tile", tile, "--json"]
        )
        assert code == 0
        outputs[tile] = (json.loads(stdout)["tile"], cv2.imread(str(dst), cv2.IMREAD_UNCHANGED))
    assert outputs["32"][0] == 32 and outputs["0"][0] == 90 and outputs["auto"][0] == 90
    assert np.array_equal(outputs["32"][1], outputs["0"][1])  # seam-free: identical bytes
    assert np.array_equal(outputs["auto"][1], outputs["0"][1])
    code, _, err = run_cli(
        ["upscale", str(src), "-s", "2", "-o", str(tmp_path / "v.png"), "-v", "--tile", "48"],
    )
    assert code == 0 and "tile 48" in err and "on cpu" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tile", "8"], "--tile"),
        (["--tile", "big"], "--tile"),
        (["--precision", "fp8"], "--precision"),
    ],
)
def test_bad_tile_and_precision_are_usage_errors(run_cli, tmp_path, capsys, args, message):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), "-s", "2", *args])
    assert code == 2 and message in err


def test_half_precision_on_cpu_is_refused_before_any_file(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(
        ["upscale", str(src), "-s", "2", "--precision", "fp16", "--device", "cpu"]
    )
    assert code == 2 and "needs a CUDA device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_stdin_cannot_join_a_batch(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", "-", str(src), "-s", "2", "-o", str(tmp_path)])
    assert code == 2 and "standard input" in err


def test_repeated_globs_and_format_conversion(run_cli, folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(folder), "-s", "2", "-o", str(out), "-r", "--format", "webp"]
    code, _, err = run_cli([*args, "--glob", "a.*", "--glob", "c.*"])
    assert code == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.webp", "sub/c.webp"]
    assert cv2.imread(str(out / "a.webp")).shape == (24, 32, 3)


def test_several_files_go_beside_each_input_or_into_a_folder(run_cli, tmp_path, capsys):
    a, b = write(tmp_path / "a.png", small()), write(tmp_path / "b.png", small())
    code, _, err = run_cli(["upscale", str(a), str(b), "-s", "2"])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2.png", "b.png", "b_x2.png"]
    code, _, err = run_cli(["upscale", str(a), str(b), "-s", "2", "-o", str(tmp_path / "o.png")])
    assert code == 2 and "-o DIR" in err
    code, _, err = run_cli(["upscale", str(a), str(b), "-s", "2", "-o", str(tmp_path / "o")])
    assert code == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]


def test_quality_controls_jpeg_size(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", cv2.imread(str(EXAMPLE))[:60, :60])
    sizes = {}
    for q in ("20", "95"):
        dst = tmp_path / f"q{q}.jpg"
        code, _, _ = run_cli(["upscale", str(src), "-s", "2", "-o", str(dst), "--quality", q])
        assert code == 0
        sizes[q] = dst.stat().st_size
    assert sizes["20"] < sizes["95"] / 2


def test_progress_display_is_off_when_stderr_is_not_a_terminal():
    from gsasr_cli.cli import _progress

    assert _progress(3).disable  # pytest captures stderr: not a terminal


def test_output_ending_in_a_slash_is_a_folder_even_for_one_input(run_cli, tmp_path, capsys):
    src = write(tmp_path / "x.png", small())
    code, _, err = run_cli(["upscale", str(src), "-s", "2", "-o", f"{tmp_path / 'new'}/"])
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "new" / "x.png")).shape == (24, 32, 3)
