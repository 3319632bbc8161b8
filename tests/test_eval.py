"""`gsasr eval`: the protocol, the table, the JSON and plot outputs, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gsasr_cli import evaluate as ev
from gsasr_cli.jobs import list_images
from gsasr_cli.metrics import psnr_y
from gsasr_cli.resize import imresize
from gsasr_cli.weights_io import load_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.png"


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    image = cv2.imread(str(EXAMPLE))
    cv2.imwrite(str(folder / "a.png"), image[:61, :77])
    cv2.imwrite(str(folder / "b.png"), image[100:150, 20:90])
    return folder


@pytest.mark.parametrize("scale", [2.0, 2.5, 3.7, 12.0])
def test_pair_sizes_follow_the_protocol(scale):
    hr = np.random.default_rng(0).integers(0, 256, (203, 157, 3), dtype=np.uint8)
    crop, lr = ev.make_pair(hr, scale)
    lh, lw = math.floor(203 / scale), math.floor(157 / scale)
    assert lr.shape == (lh, lw, 3)
    assert crop.shape == (round(lh * scale), round(lw * scale), 3)
    assert np.array_equal(crop, hr[: crop.shape[0], : crop.shape[1]])
    assert np.array_equal(lr, np.round(lr * 255) / 255)  # on the 8-bit grid
    # The LR image is MATLAB bicubic of the crop, not of the whole image.
    want = imresize(torch.from_numpy(crop).permute(2, 0, 1).double() / 255, lh, lw)
    assert np.abs(lr - want.clamp(0, 1).permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_too_small_an_image_is_refused_by_name():
    hr = np.zeros((30, 40, 3), np.uint8)
    with pytest.raises(ev.GsasrError, match=r"tiny.png: 40x30 is too small to score at x12"):
        ev.make_pair(hr, 12.0, "tiny.png")


def test_scores_equal_a_direct_computation(hr_folder):
    model = load_model()
    cpu = torch.device("cpu")
    methods = {"bicubic": ev.bicubic_method(), "gsasr": ev.gsasr_method(model)}
    records = ev.evaluate(list_images(hr_folder), [2.0, 3.7], methods)
    assert [(r.image, r.scale, r.method) for r in records] == [
        (name, s, m) for name in ("a.png", "b.png") for s in (2.0, 3.7) for m in methods
    ]
    for r in records:
        hr = cv2.imread(str(hr_folder / r.image))[:, :, ::-1]
        crop, lr = ev.make_pair(hr, r.scale)
        size = crop.shape[:2]
        if r.method == "gsasr":  # the tiled path of the CLI equals one untiled render
            scale = (size[0] / lr.shape[0], size[1] / lr.shape[1])
            x = torch.from_numpy(lr).permute(2, 0, 1)[None].to(cpu)
            with torch.inference_mode():
                out = model(x, size, scale)[0].permute(1, 2, 0).numpy()
        else:
            t = torch.from_numpy(lr).permute(2, 0, 1).double()
            out = imresize(t, *size).permute(1, 2, 0).numpy()
        assert r.psnr == psnr_y(ev.to_uint8(out), crop, math.ceil(r.scale))
        assert 0 < r.ssim < 1 and r.seconds > 0
    by = ev.summarise(records)
    assert by[2.0]["gsasr"]["psnr"] > by[2.0]["bicubic"]["psnr"] + 1.0
    assert by[3.7]["gsasr"]["images"] == 2


def test_table_means_and_differences():
    records = [
        ev.Record("a", 2.0, "bicubic", 30.0, 0.9, 0.0),
        ev.Record("b", 2.0, "bicubic", 32.0, 0.8, 0.0),
        ev.Record("a", 2.0, "liif", 34.0, 0.95, 4.0),
        ev.Record("b", 2.0, "liif", 35.0, 0.93, 6.0),
        ev.Record("a", 2.0, "gsasr", 34.5, 0.96, 1.0),
        ev.Record("b", 2.0, "gsasr", 35.5, 0.94, 2.0),
    ]
    table = ev.markdown(records, ["bicubic", "liif", "gsasr"], per_image=True)
    lines = table.splitlines()
    assert lines[0] == (
        "| scale | images | bicubic PSNR / SSIM | liif PSNR / SSIM | gsasr PSNR / SSIM "
        "| gsasr - liif dB | liif s/image | gsasr s/image |"
    )
    assert lines[2] == (
        "| x2 | 2 | 31.00 / 0.8500 | 34.50 / 0.9400 | 35.00 / 0.9500 | +0.50 | 5.00 | 1.50 |"
    )
    assert "| x2 | b | 32.00 | 35.00 | 35.50 |" in lines


def test_cli_prints_the_table_and_writes_json_and_plot(run_cli, hr_folder, tmp_path, capsys):
    plot, js = tmp_path / "psnr.png", tmp_path / "scores.json"
    argv = ["eval", str(hr_folder), "--scales", "2,3.7", "--per-image", "--threads", "1"]
    code, out, err = run_cli([*argv, "--json", str(js), "--plot", str(plot)])
    assert code == 0, err
    assert out.startswith("# 2 images in ")
    rows = [line for line in out.splitlines() if line.startswith("| x")]
    assert [row.split(" | ")[0] for row in rows] == ["| x2", "| x3.7"] + ["| x2"] * 2 + [
        "| x3.7"
    ] * 2
    doc = json.loads(js.read_text())
    assert len(doc["records"]) == 8 and set(doc["summary"]) == {"2", "3.7"}
    assert len(doc["weights_sha256"]) == 64
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 500


def test_cli_goes_on_past_a_bad_image_and_fails(run_cli, hr_folder, capsys):
    (hr_folder / "c.png").write_bytes(b"not a png")
    code, out, err = run_cli(["eval", str(hr_folder), "--scales", "2", "--threads", "1"])
    assert code == 1
    assert "c.png" in err and "error:" in err
    assert "| x2 | 2 |" in out  # the two good images are scored


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scales", "2,x"], "--scales must be numbers >= 1"),
        (["--scales", "0.5"], "--scales must be numbers >= 1"),
        (["--plot", "/no/such/folder/p.png"], "--plot /no/such/folder/p.png"),
        (["--json", "/"], "--json /: is a folder"),
    ],
)
def test_cli_usage_errors(run_cli, hr_folder, capsys, argv, message):
    code, _, err = run_cli(["eval", str(hr_folder), *argv])
    assert code == 2 and message in err


def test_cli_missing_folder_or_liif(run_cli, tmp_path, hr_folder, capsys):
    code, _, err = run_cli(["eval", str(tmp_path / "none")])
    assert code == 2 and f"{tmp_path / 'none'}: not a folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["eval", str(empty)])
    assert code == 1 and "no images" in err
    code, _, err = run_cli(["eval", str(hr_folder), "--liif", str(tmp_path / "x")])
    assert code == 1 and "edsr-baseline-liif.pth: not found" in err


def test_the_learning_curve_takes_each_legs_best_full_row(tmp_path):
    """benchmarks/learning_curve.py: per leg the best row scored at all 8 scales (relay rows
    and 4-scale rows skipped), its gain over the best before, and LIIF's gap from the JSON."""
    import subprocess
    import sys

    scales = ("2", "2.5", "3", "3.7", "4", "6", "8", "12")
    row = "| {} | {} | +2,000 | 9 min | " + " | ".join(["30.00 (+0.01)"] * 8) + " | {} |"
    card = "\n".join(
        [
            "v1 scores 1, 2, 3, 4, 5, 6, 7, 8.5 (and more words).",
            "| leg | run | steps | wall | x2 | x2.5 | x3 | x3.7 | x4 | x6 | x8 | x12 | mean |",
            "| 1 | relay 1 | 8,400 | 2 h | - | - | - | - | - | - | - | - | - |",
            row.format(1, "cooldown 1: words", "+0.010"),
            row.format(1, "**cooldown 1b** (shipped): words", "+0.030"),
            "| 2 | four scales | 10 | 1 h | 36.0 (-0.2) | - | - | - | - | - | - | - | +0.5 |",
            row.format(2, "cooldown 2", "+0.020"),
        ]
    )
    (tmp_path / "card.md").write_text(card)
    liif = {
        s: {"liif": {"psnr": v + 0.1}}
        for s, v in zip(scales, [1, 2, 3, 4, 5, 6, 7, 8.5], strict=True)
    }
    (tmp_path / "eval.json").write_text(json.dumps({"summary": liif}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curve.py"
    cmd = [sys.executable, str(script), str(tmp_path / "card.md"), str(tmp_path / "eval.json")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[2] == "| 1 | cooldown 1b (shipped) | +0.030 | +0.030 | 0.070 |"
    assert lines[3] == "| 2 | cooldown 2 | +0.020 | -0.010 | 0.080 |"
    assert "LIIF's mean over v1: +0.100 dB" in out.stdout
    (tmp_path / "card.md").write_text(card.replace("8.5 (and", "(and"))
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.startswith("error: v1 scores: expected 8")
