"""The training script: samples, a few steps, export and resume."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gsasr_cli.errors import GsasrError
from gsasr_cli.model import GSASR, ModelConfig
from gsasr_cli.train import PatchSampler, main
from gsasr_cli.weights_io import load_model

EXAMPLE = Path(__file__).parent.parent / "examples" / "grace_hopper.png"


def test_sampler_shapes_scales_and_quantisation():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)]
    sampler = PatchSampler(
        images, patch=16, batch=3, scale_range=(1.0, 4.0), anisotropic=1.0, seed=1
    )
    for _ in range(5):
        lr, hr, (sy, sx) = sampler()
        assert lr.shape == (3, 3, 16, 16)
        assert hr.shape == (3, 3, round(16 * sy), round(16 * sx))
        assert 1.0 <= sy <= 4.0 and 1.0 <= sx <= 4.0
        assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit, like real LR images
        assert lr.min() >= 0 and lr.max() <= 1


def test_a_short_run_exports_weights_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(data / f"{i}.png"), rng.integers(0, 256, (80, 90, 3), dtype=np.uint8))
    out = tmp_path / "run"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--patch",
        "8",
        "--batch",
        "2",
        "--log-every",
        "1",
        "--save-every",
        "2",
        "--threads",
        "1",
    ]
    main([*args, "--steps", "2"])
    first = load_model(out / "ema.safetensors")
    main([*args, "--steps", "3"])
    err = capsys.readouterr().err
    assert "resumed from" in err and "at step 2" in err and "step 3/3" in err
    second = load_model(out / "ema.safetensors")
    changed = [
        not torch.equal(a, b)
        for a, b in zip(first.decoder.parameters(), second.decoder.parameters(), strict=True)
    ]
    assert any(changed)
    # The encoder stays frozen unless --train-encoder.
    for a, b in zip(first.encoder.parameters(), second.encoder.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(data / f"{i}.png"), rng.integers(0, 256, (80, 90, 3), dtype=np.uint8))
    return data


def test_the_relay_file_continues_a_run_on_another_machine(tiny_data, tmp_path, capsys):
    from safetensors import safe_open

    relay = tmp_path / "relay.safetensors"
    base = ["--data", str(tiny_data), "--patch", "8", "--batch", "2", "--threads", "1"]
    base += ["--log-every", "1", "--save-every", "100", "--workers", "0"]
    main([*base, "--out", str(tmp_path / "a"), "--until", "3", "--relay-file", str(relay)])
    main([*base, "--out", str(tmp_path / "a"), "--until", "4", "--relay-file", str(relay)])
    with safe_open(str(relay), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["step"] == "4" and not any(k.startswith("adam/") for k in keys)
    assert json.loads(meta["train"])["patch"] == 8
    capsys.readouterr()
    # A new machine: an empty run folder, only the relay file. The run's hyperparameters
    # come from the file (patch 8, batch 2 are not given again), the step goes on from 4,
    # and without Adam's moments the learning rate warms up again.
    main(["--data", str(tiny_data), "--out", str(tmp_path / "b"), "--resume", str(relay),
          "--until", "6", "--warmup", "4", "--log-every", "1", "--workers", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert f"resumed from {relay} at step 4" in err
    lrs = [float(line.split(" lr ")[1].split()[0]) for line in err.splitlines() if " lr " in line]
    assert lrs == pytest.approx([2e-4 / 4, 2e-4 * 2 / 4])
    with safe_open(str(tmp_path / "b" / "checkpoint.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["train"])["batch"] == 2
        assert any(k.startswith("adam/") for k in f.keys())  # the run folder keeps Adam


def test_the_encoder_trains_at_its_own_rate(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(tiny_data), "--out", str(out), "--patch", "8", "--batch", "2"]
    main([*args, "--until", "1", "--workers", "0", "--encoder-lr", "1e-3"])
    first = load_model(out / "ema.safetensors")
    main([*args, "--until", "3", "--workers", "0"])
    second = load_model(out / "ema.safetensors")
    moved = [
        not torch.equal(a, b)
        for a, b in zip(first.encoder.parameters(), second.encoder.parameters(), strict=True)
    ]
    assert all(moved)


def test_a_relay_file_stores_a_frozen_encoder_once_and_fits_in_12_mb(tmp_path):
    """The EMA of a frozen encoder equals it bit for bit; a 6-block decoder's relay file
    with both copies would be 13.5 MB, over the issue's 12 MB."""
    from gsasr_cli.checkpoint import Checkpoint, load_checkpoint, model_state, save_checkpoint

    model = GSASR(ModelConfig(decoder_blocks=6))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.decoder.parameters():
            p.add_(0.5)
    ckpt = Checkpoint(model_state(model), model_state(ema), None, 0, model.cfg, {}, 7, 1.0)
    path = tmp_path / "relay.safetensors"
    save_checkpoint(ckpt, path, with_adam=False)
    n_model = sum(p.numel() for p in model.parameters())
    n_decoder = sum(p.numel() for p in model.decoder.parameters())
    assert path.stat().st_size == pytest.approx(4 * (n_model + n_decoder), rel=0.01)
    assert path.stat().st_size < 12_000_000 < 8 * n_model
    back = load_checkpoint(path)
    assert back.ema.keys() == ckpt.ema.keys() and back.model.keys() == ckpt.model.keys()
    for k in ckpt.ema:
        assert torch.equal(back.ema[k], ckpt.ema[k]) and torch.equal(back.model[k], ckpt.model[k])


def test_grown_decoder_renders_what_it_grew_from():
    from gsasr_cli.grow import grow

    model = load_model()
    cfg = model.cfg
    photo = cv2.imread(str(EXAMPLE))[100:120, 60:83, ::-1] / 255.0
    lr = torch.from_numpy(photo.copy()).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        want = model(lr, (50, 41))
        deeper = grow(model, replace(cfg, decoder_blocks=cfg.decoder_blocks + 3)).eval()
        assert deeper.cfg.decoder_blocks == model.cfg.decoder_blocks + 3
        assert torch.equal(deeper(lr, (50, 41)), want)  # new blocks start as the identity
        finer = grow(model, replace(cfg, grid=2 * cfg.grid), noise=0.0).eval()
        assert finer.cfg.gaussians_per_pixel == 4 * model.cfg.gaussians_per_pixel
        field, parent = finer.gaussians(lr, (2.5, 1.8)), model.gaussians(lr, (2.5, 1.8))
        got = finer(lr, (50, 41))
        parted = grow(model, replace(cfg, grid=2 * cfg.grid)).gaussians(lr, (2.5, 1.8))
    # Without noise each child has its parent's mean, shape and colour exactly (to float
    # rounding of the shifted logits), and its opacity is a quarter of the parent's to
    # first order, so a photo barely moves.
    n = model.cfg.grid
    shape = (1, 20, 23, n, 2, n, 2)
    for name in ("means", "sigmas", "rhos", "colors"):
        child, par = getattr(field, name), getattr(parent, name)
        child = child.view(*shape, *child.shape[4:])
        par = par.view(1, 20, 23, n, 1, n, 1, *par.shape[4:])
        torch.testing.assert_close(child, par.expand_as(child), rtol=0, atol=2e-6)
    assert 0 < (got - want).abs().mean() < 0.01
    # Near the calibrated opacity (an untrained head) the children's opacities sum to
    # the parent's up to second-order terms.
    fresh = GSASR(ModelConfig())
    with torch.no_grad():
        split = (
            grow(fresh, replace(fresh.cfg, grid=4), noise=0.0).gaussians(lr, (2.0, 2.0)).opacities
        )
        base = fresh.gaussians(lr, (2.0, 2.0)).opacities
    ratio = split.view(*shape).sum((4, 6)) / base.view(1, 20, 23, n, n)
    assert (ratio - 1).abs().max() < 1e-3
    # The noise sets the children apart, slightly.
    spread = parted.means.view(*shape, 2).std(dim=(4, 6))
    assert (spread > 0).all() and spread.max() < 0.05


def test_grow_refuses_to_shrink():
    from gsasr_cli.grow import grow

    model = load_model()
    cfg = model.cfg
    with pytest.raises(ValueError, match="cannot shrink or regrid"):
        grow(model, replace(cfg, decoder_blocks=cfg.decoder_blocks - 1))
    with pytest.raises(ValueError, match="cannot shrink or regrid"):
        grow(model, replace(cfg, grid=cfg.grid + 1))
    with pytest.raises(ValueError, match="fixed"):
        grow(model, replace(cfg, n_feats=32))


def test_gsasr_train_passes_its_arguments_through(capsys):
    from gsasr_cli.cli import main as cli

    with pytest.raises(SystemExit) as exc:
        cli(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gsasr train") and "--train-encoder" in out


def test_a_missing_data_folder_is_one_line(tmp_path):
    with pytest.raises(GsasrError, match=r"none: not a folder"):
        main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")])


def test_a_terminated_run_saves_and_stops_cleanly(tiny_data, tmp_path):
    """SIGTERM to the whole process group (as `kill -- -PGID` or a closing session sends
    it) reaches the data worker too: the trainer must still save, then exit 143 (not 0: the
    run is not finished, and `gsasr train ... && gsasr eval ...` must not go on)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gsasr_cli.train", "--data", str(tiny_data), "--out", str(out)]
    cmd += ["--patch", "8", "--batch", "2", "--threads", "1", "--workers", "1"]
    cmd += ["--log-every", "1", "--save-every", "1000", "--until", "100000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.stderr.readline().startswith("step 3/"):
            break
    os.killpg(proc.pid, signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, rest
    assert "(interrupted)" in rest and "Traceback" not in rest
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        assert int(f.metadata()["step"]) >= 3


def test_a_cooldown_branch_decays_from_where_it_starts():
    from gsasr_cli.train import TrainConfig

    tc = TrainConfig(schedule="cosine", decay_start=100, steps=200, lr=2e-4, min_lr=1e-6, warmup=1)
    lrs = [tc.learning_rate(s, warm_from=0) for s in (200 - 1, 100, 150, 200, 400)]
    assert lrs[1] == 2e-4 and lrs[2] == pytest.approx((2e-4 + 1e-6) / 2)
    assert lrs[3] == lrs[4] == pytest.approx(1e-6) and lrs[0] < 2e-6
    assert TrainConfig().learning_rate(10_000, warm_from=0) == 2e-4  # constant by default


def test_resuming_from_a_run_folder_does_not_write_into_it(tiny_data, tmp_path):
    base = ["--data", str(tiny_data), "--patch", "8", "--batch", "2", "--workers", "0"]
    main([*base, "--out", str(tmp_path / "main"), "--until", "2"])
    source = tmp_path / "main" / "checkpoint.safetensors"
    before = source.read_bytes()
    main([*base, "--out", str(tmp_path / "branch"), "--resume", str(source), "--until", "3"])
    assert source.read_bytes() == before  # the branch leaves the main run as it was
    assert (tmp_path / "branch" / "checkpoint.safetensors").is_file()


def test_a_mix_gives_named_sources_their_shares_of_the_draws():
    from gsasr_cli.train import parse_mix, sampling_weights

    names = ["graphics__a.png", "graphics__b.png", "kde__x.jpg", "kde__y.jpg", "mate__z.png"]
    areas = [1.0, 3.0, 10.0, 30.0, 60.0]
    w = sampling_weights(names, areas, parse_mix("graphics=0.2, kde=0.5"))
    assert w == pytest.approx([0.05, 0.15, 0.125, 0.375, 0.3], abs=1e-12)
    assert sampling_weights(names, areas, {}) == pytest.approx([a / 104 for a in areas])
    w = sampling_weights(names, areas, parse_mix("graphics=1"))  # the rest gets nothing
    assert w == pytest.approx([0.25, 0.75, 0, 0, 0])
    with pytest.raises(GsasrError, match="no images from nope"):
        sampling_weights(names, areas, {"nope": 0.1})
    for bad in ["graphics", "graphics=x", "graphics=1.5", "=0.1", "a=0.6,b=0.6"]:
        with pytest.raises(ValueError, match="mix"):
            parse_mix(bad)


def test_a_mix_draws_its_shares(tmp_path):
    """Drawn patches follow the mix: a flat-black source at 0.3, a flat-white one at 0.7."""
    images = [np.zeros((64, 64, 3), np.uint8), np.full((200, 200, 3), 255, np.uint8)]
    from gsasr_cli.train import sampling_weights

    weights = sampling_weights(["dark__a.png", "light__b.png"], [64 * 64, 200 * 200],
                               {"dark": 0.3})  # fmt: skip
    sampler = PatchSampler(images, 8, 50, (2.0, 2.0), 0.0, 3, weights)
    dark = sum(int((hr.mean((1, 2, 3)) < 0.5).sum()) for _, hr, _ in (sampler() for _ in range(40)))
    # 2000 draws at p = 0.3: mean 600, standard deviation 20.5; 5 sigma either side
    assert 600 - 103 < dark < 600 + 103


def test_a_bad_mix_is_a_usage_error(tmp_path):
    from gsasr_cli.errors import UsageProblem

    with pytest.raises(UsageProblem, match="--mix"):
        main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--mix", "a=2"])


# ------------------------------------------------- bad runs: one line, nothing lost, no hang
BASE = ["--patch", "8", "--batch", "2", "--threads", "1", "--log-every", "1", "--workers", "0"]


def test_images_too_small_for_the_crop_fail_at_once(tmp_path):
    """The sampler used to draw forever (100% CPU, deaf to Ctrl-C) when no image held the
    HR crop of the largest scale."""
    data = tmp_path / "small"
    data.mkdir()
    for i in range(2):
        cv2.imwrite(str(data / f"{i}.png"), np.full((24, 30, 3), 9 * i, np.uint8))
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2"]
    with pytest.raises(GsasrError, match=r"no image holds a 64x64 crop .*the largest is 30x24"):
        main([*args, *BASE[:-4], "--patch", "16"])
    main([*args, *BASE, "--scale-max", "3"])  # 8 x 3 = 24 fits
    rng_images = [np.zeros((24, 30, 3), np.uint8)]
    sampler = PatchSampler(rng_images, patch=16, batch=2, scale_range=(4, 4), anisotropic=0, seed=0)
    with pytest.raises(GsasrError, match="no training image holds an HR crop of 64x64"):
        sampler()


@pytest.mark.parametrize(
    "flag, value",
    [("--log-every", "0"), ("--save-every", "0"), ("--patch", "0"), ("--batch", "0"),
     ("--threads", "-1"), ("--workers", "-1"), ("--lr", "-1"), ("--lr", "nan"),
     ("--scale-max", "0.5"), ("--scale-min", "0.5"), ("--ema", "2"), ("--sample", "-1"),
     ("--grid", "0"), ("--decoder-blocks", "0"), ("--minutes", "0"), ("--anisotropic", "2")],
)  # fmt: skip
def test_hyperparameters_that_cannot_train_are_usage_errors(tiny_data, tmp_path, flag, value):
    """Each used to crash with a traceback (and a data worker then kept the process from
    exiting), or to be taken silently (grid 0 became 2, scales below 1 trained)."""
    from gsasr_cli.errors import UsageProblem

    args = ["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--steps", "2", *BASE]
    with pytest.raises(UsageProblem, match=flag):
        main([*args, flag, value])
    assert not (tmp_path / "run").exists()


def test_a_failure_inside_the_loop_ends_the_process(tiny_data, tmp_path):
    """A data worker ignored SIGTERM, so the clean-up at a failed trainer's exit waited for
    it forever (a traceback, then a hang)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        import gsasr_cli.train as t
        real, calls = t.train_step, []
        def failing(*args):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("boom")
            return real(*args)
        t.train_step = failing
        t.main(sys.argv[1:])
        """
    )
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--until", "100"]
    args += [*BASE[:-2], "--workers", "1", "--save-every", "2"]
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "RuntimeError: boom" in out.stderr


def test_a_diverging_run_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    """A NaN loss used to be trained on and saved over the checkpoint, exit 0."""
    from safetensors import safe_open

    import gsasr_cli.train as t

    real, calls = t.train_step, []

    def diverging(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) >= 4 else loss

    monkeypatch.setattr(t, "train_step", diverging)
    out = tmp_path / "run"
    args = ["--data", str(tiny_data), "--out", str(out), "--until", "10", "--save-every", "2"]
    with pytest.raises(GsasrError, match=r"diverged \(loss nan\) at step 4; .* step 2 is kept"):
        main([*args, *BASE])
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "2"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())
    assert torch.isfinite(next(load_model(out / "ema.safetensors").parameters())).all()


def _doctored(src: Path, dst: Path, tensors=None, train=None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta, data = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    data |= tensors or {}
    if train is not None:
        meta["train"] = json.dumps(train)
    save_file(data, str(dst), metadata=meta)
    return dst


def test_checkpoints_that_do_not_fit_are_one_line(tiny_data, tmp_path):
    """A [1] tensor used to be broadcast over a parameter (a silent, wrong resume); NaN
    weights were trained on; other misfits crashed with a traceback."""
    main(["--data", str(tiny_data), "--out", str(tmp_path / "a"), "--until", "2", *BASE])
    good = tmp_path / "a" / "checkpoint.safetensors"
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        train = json.loads(f.metadata()["train"])
        name = next(k for k in f.keys() if k.startswith("model/decoder.head.weight"))
        head = f.get_tensor(name)
    cases = [
        ({name: torch.zeros(1)}, None, r"decoder.head.weight has shape \[1\], the model needs"),
        ({name: head * float("nan")}, None, "holds NaN or Inf weights"),
        ({"adam/" + name[6:] + "/m": torch.zeros(3)}, None, "Adam's moments of .* do not fit"),
        (None, {**train, "novel": 1}, "its hyperparameters cannot be read"),
        (None, [1, 2], "its hyperparameters cannot be read"),
    ]
    for i, (tensors, meta, message) in enumerate(cases):
        bad = _doctored(good, tmp_path / f"bad{i}.safetensors", tensors, meta)
        before = bad.read_bytes()
        with pytest.raises(GsasrError, match=message):
            main(["--data", str(tiny_data), "--out", str(tmp_path / f"r{i}"), "--resume",
                  str(bad), "--until", "4", *BASE])  # fmt: skip
        assert bad.read_bytes() == before and not (tmp_path / f"r{i}").exists()


def test_run_files_that_would_clash_are_refused_before_training(tiny_data, tmp_path):
    from gsasr_cli.errors import UsageProblem

    (tmp_path / "afile").write_text("x")
    run = tmp_path / "run"
    base = ["--data", str(tiny_data), "--until", "2", *BASE]
    with pytest.raises(UsageProblem, match="is a file, not a run folder"):
        main([*base, "--out", str(tmp_path / "afile")])
    for relay, message in (
        (run / "checkpoint.safetensors", "the run folder's own file"),
        (run / "ema.safetensors", "the run folder's own file"),
        (tiny_data / "relay.safetensors", "inside the training data"),
    ):
        with pytest.raises(UsageProblem, match=message):
            main([*base, "--out", str(run), "--relay-file", str(relay)])
    with pytest.raises(GsasrError, match="afile: not LIIF's edsr-baseline-liif.pth"):
        main([*base, "--out", str(run), "--liif-encoder", str(tmp_path / "afile")])
    assert sorted(p.name for p in tiny_data.iterdir()) == ["0.png", "1.png"]


def test_average_weights_is_the_parameter_mean_and_refuses_mixed_architectures(tmp_path):
    """scripts/average_weights.py: the mean of each parameter in float32 (saved in float16,
    so within fp16's rounding of it), the largest `steps`, and no file from models of two
    architectures."""
    from safetensors import safe_open

    from gsasr_cli.weights_io import save_weights

    small = ModelConfig(n_feats=8, n_resblocks=1, decoder_blocks=1)
    paths = []
    for i, steps in enumerate((10, 30)):
        torch.manual_seed(i)
        paths.append(tmp_path / f"m{i}.safetensors")
        save_weights(GSASR(small), paths[-1], extra={"steps": str(steps)})
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    out = tmp_path / "avg.safetensors"
    res = subprocess.run([sys.executable, str(script), str(out), *map(str, paths)],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    a, b, avg = (dict(load_model(p).named_parameters()) for p in (*paths, out))
    for name, p in avg.items():
        want = (a[name].float() + b[name].float()) / 2
        assert torch.equal(p, want.half().float()), name  # the float16 nearest the mean
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["steps"] == "30"
    save_weights(GSASR(replace(small, decoder_blocks=2)), paths[1])
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "x.safetensors"),
                          *map(str, paths)], capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0 and "different architectures" in res.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_average_weights_never_replaces_a_file_and_says_what_is_wrong_in_one_line(tmp_path):
    """The output may not exist (it could be one of the inputs); a missing or unreadable
    input is one line on stderr and exit 1, and nothing is written."""
    from gsasr_cli.weights_io import save_weights

    a = tmp_path / "a.safetensors"
    save_weights(GSASR(ModelConfig(n_feats=8, n_resblocks=1, decoder_blocks=1)), a)
    before = a.read_bytes()
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    cases = [
        ([a, a, a], "exists; not replaced"),
        ([tmp_path / "o.safetensors", a, tmp_path / "nope.safetensors"], "not found"),
    ]
    for args, message in cases:
        res = subprocess.run([sys.executable, str(script), *map(str, args)],
                             capture_output=True, text=True)  # fmt: skip
        assert res.returncode == 1 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert a.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["a.safetensors"]


def test_pack_gpu_data_fits_the_budget_and_never_replaces_a_folder(tmp_path):
    """scripts/pack_gpu_data.py: a seeded choice of whole files within --max-mb (one too
    large for what is left is skipped, smaller ones after it still taken), the same choice
    for the same seed, and an existing --out refused."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for i, size in enumerate([400_000, 300_000, 250_000, 200_000, 100_000, 50_000]):
        (src / f"p{i}.png").write_bytes(bytes(size))
    (src / "notes.txt").write_bytes(bytes(10))
    script = Path(__file__).resolve().parents[1] / "scripts" / "pack_gpu_data.py"

    def pack(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(script), str(src), "--out", str(tmp_path / out), *extra]
        return subprocess.run(cmd, capture_output=True, text=True)

    picks = []
    for out in ("a", "b"):
        res = pack(out, "--max-mb", "0.6", "--seed", "3")
        assert res.returncode == 0, res.stderr
        files = sorted(p.name for p in (tmp_path / out).iterdir())
        total = sum((tmp_path / out / f).stat().st_size for f in files)
        assert total <= 600_000 and "notes.txt" not in files
        left_out = [p.stat().st_size for p in src.glob("*.png") if p.name not in files]
        assert left_out and min(left_out) > 600_000 - total  # each one left out did not fit
        picks.append(files)
    assert picks[0] == picks[1]
    res = pack("a")
    assert res.returncode == 1 and "exists" in res.stderr
    res = pack("c", "--max-mb", "0.01")
    assert res.returncode == 1 and "no image fits" in res.stderr and not (tmp_path / "c").exists()
    res = pack("c", "--max-mb", "nan")
    assert res.returncode == 2 and "above 0" in res.stderr and not (tmp_path / "c").exists()


def test_pack_gpu_data_leaves_nothing_when_a_copy_fails(tmp_path, monkeypatch, capsys):
    """A copy that failed half-way (a full disk) left a partial OUT that looked complete."""
    import importlib.util
    import os
    import shutil

    script = Path(__file__).resolve().parents[1] / "scripts" / "pack_gpu_data.py"
    spec = importlib.util.spec_from_file_location("pack_gpu_data", script)
    assert spec is not None and spec.loader is not None
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.png").write_bytes(bytes(1000))
    copied = []

    def fail_third(a, b):
        if len(copied) == 2:
            raise OSError(28, "No space left on device")
        copied.append(b)
        Path(b).write_bytes(Path(a).read_bytes())

    monkeypatch.setattr(os, "link", fail_third)
    monkeypatch.setattr(shutil, "copyfile", fail_third)
    assert pack.main([str(src), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().endswith("out: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no OUT, no temporary
