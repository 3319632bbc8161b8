"""Train gsasr (the Gaussian decoder, and the encoder at its own learning rate) on patches.

    gsasr train --data data/train --liif-encoder edsr-baseline-liif.pth --out runs/first
    gsasr train --out runs/relay --resume --minutes 120     # continue the relay run

Samples: an HR crop of round(p * s) pixels per axis with s ~ U(smin, smax), random
flips and transposes, shrunk to p x p with MATLAB bicubic (antialiased) and quantised
to 8 bits, as real LR images are; made in a worker process ahead of the step. Loss: L1
between the render and the HR crop. Adam, a constant (relay) or cosine learning rate
after a linear warm-up; an EMA of the weights is what gets exported.

Resumable: the run folder keeps a full checkpoint (with Adam's moments) and the EMA as
shippable weights; `--relay-file` also writes a compact checkpoint (model and EMA only)
for the repository, from which `--resume` continues on another machine.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gsasr_kernels import axis_map

from .checkpoint import Checkpoint, load_checkpoint, load_into, model_state, save_checkpoint
from .errors import GsasrError, UsageProblem
from .files import real_path
from .grow import grow
from .model import COLOR_MODES, GSASR, RENDER_MODES, ModelConfig
from .resize import imresize
from .weights_io import load_model, save_weights

RELAY_FILE = Path("weights/training/relay.safetensors")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """A run's hyperparameters: stored in its checkpoints, so a resumed run keeps them."""

    patch: int = 48  # LR patch side
    batch: int = 16
    lr: float = 2e-4  # decoder (and scale MLP)
    encoder_lr: float = 0.0  # 0 keeps the encoder frozen
    min_lr: float = 1e-6  # the cosine schedule's floor
    schedule: str = "constant"  # "cosine" decays over `steps`
    steps: int = 5000  # where the cosine schedule ends
    decay_start: int = 0  # where it starts (a cooldown of a constant-rate run)
    warmup: int = 200  # linear warm-up, at the start and after a resume without Adam state
    ema: float = 0.999
    scale_min: float = 1.0
    scale_max: float = 4.0
    anisotropic: float = 0.25  # share of batches with an independent x scale
    seed: int = 0
    sample: int = 0  # HR rows and columns per patch the loss sees (0: all of them)
    mix: str = ""  # "source=share,...": fixed shares of the samples for named sources
    bf16: bool = False  # autocast the network to bfloat16 (CPUs with AVX512-BF16 or AMX)
    channels_last: bool = False

    def check(self) -> None:
        """UsageProblem naming the first hyperparameter that cannot train."""
        rules = (
            (self.patch >= 2, "patch", "at least 2"),
            (self.batch >= 1, "batch", "at least 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", "a number above 0"),
            (math.isfinite(self.encoder_lr) and self.encoder_lr >= 0, "encoder-lr", "0 or more"),
            (0 <= self.min_lr <= self.lr, "min-lr", "from 0 to --lr"),
            (self.steps >= 1, "steps", "at least 1"),
            (self.decay_start >= 0, "decay-start", "0 or more"),
            (self.warmup >= 0, "warmup", "0 or more"),
            (0 <= self.ema < 1, "ema", "in [0, 1)"),
            (1 <= self.scale_min <= 64, "scale-min", "from 1 to 64"),
            (self.scale_min <= self.scale_max <= 64, "scale-max", "from --scale-min to 64"),
            (0 <= self.anisotropic <= 1, "anisotropic", "in [0, 1]"),
            (self.sample >= 0, "sample", "0 or more"),
        )
        for ok, flag, want in rules:
            if not ok:
                value = getattr(self, flag.replace("-", "_"))
                raise UsageProblem(f"--{flag} must be {want}, got {value:g}")

    def learning_rate(self, step: int, warm_from: int) -> float:
        """Learning rate of the decoder at `step`, warming up from step `warm_from`."""
        base = self.lr
        if self.schedule == "cosine":  # from decay_start to steps (a cooldown when > 0)
            t = min(1.0, max(0, step - self.decay_start) / max(1, self.steps - self.decay_start))
            base = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))
        return base * min(1.0, (step - warm_from + 1) / max(1, self.warmup))


def load_images(folder: Path) -> list[np.ndarray]:
    """All images of `folder` (as a batch run lists and reads them) as RGB uint8 arrays."""
    return [image for _, image in load_named_images(folder)]


def load_named_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB uint8 array) of every image of `folder`."""
    from .imageio import read_image
    from .jobs import list_images

    try:
        paths = list_images(folder)
    except GsasrError as exc:
        raise GsasrError(f"{exc} (build it with scripts/build_dataset.py)") from exc
    return [(p.name, np.rint(read_image(p).rgb * 255.0).astype(np.uint8)) for p in paths]


def source_of(name: str) -> str:
    """The source of a dataset file: its name up to "__" (`scripts/build_dataset.py` names
    files `<package>__<stem>`; generated graphics are `graphics__...`)."""
    return name.split("__", 1)[0]


def parse_mix(spec: str) -> dict[str, float]:
    """`"graphics=0.1,endless-sky-data=0.05"` -> {source: share}; ValueError if malformed."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        source, sep, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if not sep or not source.strip() or not 0 <= share <= 1:
            raise ValueError(f"mix: {item!r} is not source=share with a share in [0, 1]")
        mix[source.strip()] = share
    if sum(mix.values()) > 1 + 1e-9:
        raise ValueError(f"mix: the shares add up to {sum(mix.values()):g}, more than 1")
    return mix


def sampling_weights(names: list[str], areas: list[float], mix: dict[str, float]) -> list[float]:
    """Each image's probability of being drawn: by area within its group, the sources named
    in `mix` taking their shares of all draws and the other sources the rest."""
    sources = [source_of(n) for n in names]
    missing = sorted(set(mix) - set(sources))
    if missing:
        raise GsasrError(f"mix: no images from {', '.join(missing)}")
    rest = 1.0 - sum(mix.values())
    total: dict[str | None, float] = {}
    for source, area in zip(sources, areas, strict=True):
        key = source if source in mix else None
        total[key] = total.get(key, 0.0) + area
    return [
        area * (mix[s] if s in mix else rest) / total[s if s in mix else None]
        for s, area in zip(sources, areas, strict=True)
    ]


class PatchSampler:
    """Random (LR, HR, scale) batches from a list of images; one scale per batch."""

    def __init__(
        self,
        images: list[np.ndarray],
        patch: int,
        batch: int,
        scale_range: tuple[float, float],
        anisotropic: float,
        seed: int,
        weights: list[float] | None = None,
    ) -> None:
        self.images = images
        self.patch, self.batch = patch, batch
        self.scale_range, self.anisotropic = scale_range, anisotropic
        self.rng = random.Random(seed)
        if weights is None:  # by area: every pixel equally likely
            areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
            weights = (areas / areas.sum()).tolist()
        self.weights = weights
        drawn = [im for im, w in zip(images, weights, strict=True) if w > 0]
        self._sides = np.array([im.shape[:2] for im in drawn], np.int64).reshape(-1, 2)

    def fits(self, h: int, w: int) -> bool:
        """Whether an image that can be drawn holds an h x w crop (upright)."""
        return bool(((self._sides[:, 0] >= h) & (self._sides[:, 1] >= w)).any())

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
        rng, p = self.rng, self.patch
        sy = rng.uniform(*self.scale_range)
        sx = rng.uniform(*self.scale_range) if rng.random() < self.anisotropic else sy
        hh, wh = round(p * sy), round(p * sx)
        if not (self.fits(hh, wh) and self.fits(wh, hh)):  # the draw below would never end
            raise GsasrError(f"no training image holds an HR crop of {hh}x{wh} pixels")
        crops = []
        for _ in range(self.batch):
            transpose = rng.random() < 0.5
            ch, cw = (wh, hh) if transpose else (hh, wh)
            while True:
                image = rng.choices(self.images, weights=self.weights)[0]
                if image.shape[0] >= ch and image.shape[1] >= cw:
                    break
            y = rng.randrange(image.shape[0] - ch + 1)
            x = rng.randrange(image.shape[1] - cw + 1)
            crop = image[y : y + ch, x : x + cw]
            if transpose:
                crop = crop.transpose(1, 0, 2)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            crops.append(np.ascontiguousarray(crop))
        hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
        lr = imresize(hr, p, p).clamp(0, 1)
        lr = torch.round(lr * 255.0) / 255.0
        return lr, hr, (hh / p, wh / p)


class _Batches(torch.utils.data.IterableDataset):
    """An endless stream of a sampler's batches, for a DataLoader worker."""

    def __init__(self, sampler: PatchSampler, done: Any = None) -> None:
        self.sampler = sampler
        self.done = done  # a multiprocessing Event: set when the trainer leaves its loop

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[float, float]]]:
        info = torch.utils.data.get_worker_info()
        if info is not None:  # each worker its own stream; one thread, beside the step's
            torch.set_num_threads(1)
            # Ctrl-C or a TERM for the whole process group is the trainer's to handle (it
            # saves, then stops its workers); a worker that died of it would crash it.
            # Once the trainer has left its loop (done, or failed), a TERM ends the worker:
            # the clean-up at the trainer's exit sends one and waits for it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, self._on_term)
            self.sampler.rng.seed(self.sampler.rng.random() + info.id)
        while True:
            yield self.sampler()

    def _on_term(self, signum: int, frame: object) -> None:
        if self.done is not None and self.done.is_set():
            os._exit(0)


def batches(sampler: PatchSampler, workers: int, done: Any = None) -> Iterator:
    """The sampler's batches, made `workers` processes ahead of the step (0: inline).
    Set `done` (a multiprocessing Event) when leaving the loop, so that the workers end."""
    if workers == 0:
        return iter(_Batches(sampler))
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, done), batch_size=None, num_workers=workers, prefetch_factor=4
    )
    return iter(loader)


def train_step(
    model: GSASR,
    lr_img: torch.Tensor,  # [B, 3, p, p]
    hr: torch.Tensor,  # [B, 3, Hh, Wh]
    scale: tuple[float, float],
    tc: TrainConfig,
) -> torch.Tensor:
    """The L1 loss of one batch, with the graph for backward."""
    if tc.channels_last:
        lr_img = lr_img.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(lr_img.device.type, dtype=torch.bfloat16, enabled=tc.bf16)
    with amp:
        with torch.set_grad_enabled(tc.encoder_lr > 0):
            feat = model.encoder(lr_img)
        field = model.decode(lr_img, feat, scale)
    p = lr_img.shape[-1]
    rows, cols = axis_map(hr.shape[-2], scale[0], p), axis_map(hr.shape[-1], scale[1], p)
    if tc.sample:  # the loss on a random grid of HR rows and columns: unbiased, and cheap
        ri, ci = (_subset(n, tc.sample) for n in hr.shape[-2:])
        rows, cols = rows.take(ri), cols.take(ci)
        hr = hr.index_select(2, ri.to(hr.device)).index_select(3, ci.to(hr.device))
    out = model.render(field.float(), rows, cols, model.guard(lr_img))
    return (out - hr).abs().mean()


def _subset(n: int, k: int) -> torch.Tensor:
    """min(n, k) of range(n), drawn at random, in increasing order."""
    return torch.arange(n) if n <= k else torch.randperm(n)[:k].sort().values


def build_model(args: argparse.Namespace) -> GSASR:
    """A new run's model: from --init weights (grown to the asked shape) or from scratch."""
    if args.init:
        model = load_model(args.init)
        target = replace(
            model.cfg,
            **{
                k: v
                for k, v in (
                    ("decoder_blocks", args.decoder_blocks),
                    ("grid", args.grid),
                    ("color", args.color),
                    ("render", args.render),
                )
                if v is not None
            },
        )
        if target != model.cfg:
            try:
                model = grow(model, target, seed=args.seed or 0)
            except ValueError as exc:
                raise GsasrError(f"--init {args.init}: {exc}") from exc
        return model
    cfg = ModelConfig(
        grid=args.grid or 2,
        decoder_blocks=args.decoder_blocks or 2,
        color=args.color or "projected",
        render=args.render or "anchored",
    )
    model = GSASR(cfg)
    if args.liif_encoder:
        load_liif_encoder(model, args.liif_encoder)
    return model


def load_liif_encoder(model: GSASR, path: Path) -> None:
    """Copy LIIF's pretrained EDSR-baseline encoder (`model.sd`, `encoder.*`) into `model`."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)["model"]["sd"]
        enc = {
            k[len("encoder.") :]: v
            for k, v in sd.items()
            if k.startswith("encoder.") and "mean." not in k
        }
        model.encoder.load_state_dict(enc, strict=True)
    except Exception as exc:  # torch.load and unpickling raise many kinds
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GsasrError(f"{path}: not LIIF's edsr-baseline-liif.pth ({why[:200]})") from None


_HELP = {
    "patch": "LR patch side in pixels",
    "batch": "patches per step",
    "lr": "learning rate of the decoder and scale MLP",
    "encoder_lr": "learning rate of the encoder; 0 keeps it frozen",
    "min_lr": "floor of the cosine schedule",
    "schedule": "constant (relay runs) or cosine over --steps",
    "steps": "where the cosine schedule ends, and the default --until",
    "decay_start": "where the cosine schedule starts: a cooldown branch of a constant-rate "
    "run (--schedule cosine --decay-start NOW --steps NOW+N)",
    "warmup": "steps of linear warm-up, at the start and after a resume without Adam state",
    "ema": "decay of the exported weight average",
    "scale_min": "smallest training scale",
    "scale_max": "largest training scale",
    "anisotropic": "share of batches with an independent x scale",
    "seed": "seed of the data order and of new weights",
    "sample": "render and score only this many random HR rows and columns per patch "
    "(a random grid; 0: the whole HR patch)",
    "mix": "fixed shares of the samples for sources named by their file-name prefix, "
    "e.g. graphics=0.1,endless-sky-data=0.05; other sources share the rest by area",
    "bf16": "run the network under bfloat16 autocast (CPUs with AVX512-BF16 or AMX)",
    "channels_last": "channels-last memory format for the convolutions",
}


def _parser(prog: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Train gsasr's network.")
    ap.add_argument(
        "--data", type=Path, default=Path("data/train"), help="training images [data/train]"
    )
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, weights)")
    start = ap.add_argument_group("where a new run starts (ignored when resuming)")
    start.add_argument("--liif-encoder", type=Path, help="LIIF edsr-baseline-liif.pth")
    start.add_argument("--init", type=Path, help="start from these gsasr weights (safetensors)")
    start.add_argument(
        "--grid",
        type=int,
        help="Gaussians per LR pixel = grid^2 [default: 2, or as --init]; with --init, "
        "a multiple of its grid splits each Gaussian",
    )
    start.add_argument(
        "--decoder-blocks",
        type=int,
        help="decoder depth [default: 2, or as --init]; with --init, more blocks are "
        "added in front as the identity",
    )
    start.add_argument("--color", choices=COLOR_MODES, help="[default: projected, or as --init]")
    start.add_argument("--render", choices=RENDER_MODES, help="[default: anchored, or as --init]")
    ap.add_argument(
        "--resume",
        type=Path,
        nargs="?",
        const=RELAY_FILE,
        help=f"continue from this checkpoint when the run folder has none [{RELAY_FILE}]",
    )
    ap.add_argument(
        "--relay-file",
        type=Path,
        help="also save a compact checkpoint (no Adam state) here [the --resume file, if any]",
    )
    hyper = ap.add_argument_group(
        "hyperparameters (stored in the checkpoint; when resuming, only those given change)"
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{_HELP[f.name]} [default: {getattr(defaults, f.name)}]"
        if f.type in ("bool", bool):
            hyper.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            choices = SCHEDULES if f.name == "schedule" else None
            hyper.add_argument(flag, type=kind, choices=choices, help=text)
    ap.add_argument("--train-encoder", action="store_true", help="same as --encoder-lr lr/10")
    leg = ap.add_argument_group("this leg")
    leg.add_argument("--until", type=int, help="stop at this step [default: --steps]")
    leg.add_argument("--minutes", type=float, help="stop after this many minutes")
    leg.add_argument("--threads", type=int, default=0, help="torch threads [default: torch's]")
    leg.add_argument("--workers", type=int, default=1, help="data worker processes (0: inline)")
    leg.add_argument("--log-every", type=int, default=50, help="steps between log lines [50]")
    leg.add_argument("--save-every", type=int, default=250, help="steps between checkpoints [250]")
    return ap


def _train_config(
    args: argparse.Namespace, stored: dict[str, object] | None, source: Path | None
) -> TrainConfig:
    try:
        base = TrainConfig(**stored) if stored else TrainConfig()  # type: ignore[arg-type]
    except TypeError as exc:  # a key this version does not know, or not a mapping
        raise GsasrError(f"{source}: its hyperparameters cannot be read ({exc})") from None
    given = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    if args.train_encoder and "encoder_lr" not in given:
        given["encoder_lr"] = (given.get("lr") or base.lr) / 10
    tc = replace(base, **given)
    try:
        parse_mix(tc.mix)
    except ValueError as exc:
        raise UsageProblem(f"--{exc}") from None
    tc.check()
    return tc


def _check_leg(args: argparse.Namespace) -> None:
    """Usage problems of this leg's options and files, before any work."""
    for flag, value, low in (
        ("--threads", args.threads, 0), ("--workers", args.workers, 0),
        ("--log-every", args.log_every, 1), ("--save-every", args.save_every, 1),
        ("--until", args.until, 0), ("--grid", args.grid, 1),
        ("--decoder-blocks", args.decoder_blocks, 1),
    ):  # fmt: skip
        if value is not None and value < low:
            raise UsageProblem(f"{flag} must be at least {low}, got {value}")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageProblem(f"--minutes must be above 0, got {args.minutes:g}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageProblem(f"--out {args.out}: is a file, not a run folder")
    relay = args.relay_file
    if relay is not None:
        taken = [args.out / "checkpoint.safetensors", args.out / "ema.safetensors"]
        if any(real_path(relay) == real_path(t) for t in taken):
            raise UsageProblem(f"--relay-file {relay}: the run folder's own file; give another")
        if os.path.isdir(args.data) and real_path(relay).is_relative_to(real_path(args.data)):
            raise UsageProblem(f"--relay-file {relay}: inside the training data; give another")


def _check_crops(sampler: PatchSampler, tc: TrainConfig, data: Path) -> None:
    """GsasrError unless the images hold the largest HR crop the scales ask for."""
    side = round(tc.patch * tc.scale_max)
    if not sampler.fits(side, side):
        h, w = max((tuple(im.shape[:2]) for im in sampler.images), key=lambda hw: min(hw))
        raise GsasrError(
            f"{data}: no image holds a {side}x{side} crop (a {tc.patch}-pixel patch at "
            f"scale {tc.scale_max:g}; the largest is {w}x{h}); use a smaller --patch or "
            "--scale-max"
        )


def _check_finite(model: torch.nn.Module, what: str) -> None:
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise GsasrError(what)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`gsasr train`: parse the arguments, then train until --until, --steps or --minutes."""
    args = _parser(prog).parse_args(argv)
    _check_leg(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt_path = args.out / "checkpoint.safetensors"
    source = ckpt_path if ckpt_path.exists() else args.resume
    # The committed relay file is kept up to date by a run that resumes from it; any other
    # --resume source (a run folder's full checkpoint, say) is only read.
    relay = args.relay_file or (RELAY_FILE if args.resume == RELAY_FILE else None)
    ckpt = load_checkpoint(source) if source else None
    tc = _train_config(args, ckpt.train if ckpt else None, source)
    torch.manual_seed(tc.seed)
    model = GSASR(ckpt.config) if ckpt else build_model(args)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    start, wall, warm_from = 0, 0.0, 0
    if ckpt:
        assert source is not None
        load_into(model, ckpt.model, source)
        load_into(ema, ckpt.ema, source)
        for net in (model, ema):
            _check_finite(net, f"{source}: holds NaN or Inf weights; resume from another")
        start, wall = ckpt.step, ckpt.wall_s
        warm_from = start if ckpt.adam is None else 0
        print(f"resumed from {source} at step {start}", file=sys.stderr)
    model.to(device).train()
    ema.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.encoder.requires_grad_(tc.encoder_lr > 0)
    groups = [{"params": [p for p in model.decoder.parameters()], "scale": 1.0}]
    if tc.encoder_lr > 0:
        groups.append({"params": list(model.encoder.parameters()), "scale": tc.encoder_lr / tc.lr})
    opt = torch.optim.Adam(groups, lr=tc.lr, betas=(0.9, 0.99))
    if ckpt and ckpt.adam:
        assert source is not None
        _load_adam(opt, model, ckpt, source)

    saved = start

    def save(step: int, elapsed: float) -> None:
        nonlocal saved
        _check_finite(
            model,
            f"training diverged (NaN or Inf weights) by step {step}; stopped, and the "
            f"checkpoint of step {saved} is kept",
        )
        state = Checkpoint(
            model_state(model), model_state(ema), _adam_state(opt, model), _adam_steps(opt),
            model.cfg, asdict(tc), step, wall + elapsed,
        )  # fmt: skip
        save_checkpoint(state, ckpt_path)
        if relay:
            save_checkpoint(state, relay, with_adam=False)
        save_weights(ema, args.out / "ema.safetensors", extra={"steps": str(step)})
        saved = step

    named = load_named_images(args.data)
    weights = sampling_weights(
        [n for n, _ in named], [im.shape[0] * im.shape[1] for _, im in named], parse_mix(tc.mix)
    )
    sampler = PatchSampler(
        [im for _, im in named],
        tc.patch,
        tc.batch,
        (tc.scale_min, tc.scale_max),
        tc.anisotropic,
        tc.seed + start,
        weights,
    )
    _check_crops(sampler, tc, args.data)
    done = multiprocessing.Event()
    stream = batches(sampler, args.workers, done)
    until = args.until or tc.steps
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else math.inf
    stop = _StopFlag()
    try:
        t0, losses, step = time.monotonic(), [], start
        while step < until and time.monotonic() < deadline and not stop.raised:
            lr_now = tc.learning_rate(step, warm_from)
            for group in opt.param_groups:
                group["lr"] = lr_now * group["scale"]
            lr_img, hr, scale = next(stream)
            loss = train_step(model, lr_img.to(device), hr.to(device), scale, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                decay = min(tc.ema, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise GsasrError(
                    f"training diverged (loss {losses[-1]}) at step {step + 1}; stopped, and the "
                    f"checkpoint of step {saved} is kept"
                )
            step += 1
            if step % args.log_every == 0:
                rate = (step - start) / (time.monotonic() - t0)
                print(
                    f"step {step}/{until} loss {np.mean(losses):.4f} lr {lr_now:.2e} "
                    f"{rate:.2f} steps/s eta {(until - step) / rate / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )
                losses = []
            if step % args.save_every == 0:
                save(step, time.monotonic() - t0)
        if step > start:
            save(step, time.monotonic() - t0)
    finally:
        done.set()
        stop.restore()
    print(f"stopped at step {step} ({'interrupted' if stop.raised else 'done'})", file=sys.stderr)
    if stop.raised:  # saved, but not finished: 130 or 143, as `gsasr upscale` exits
        raise SystemExit(128 + stop.raised)


class _StopFlag:
    """SIGINT/SIGTERM end the loop after the current step, which is then saved."""

    def __init__(self) -> None:
        self.raised = 0  # the signal's number once one came
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: object) -> None:
        self.raised = signum

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _adam_state(
    opt: torch.optim.Adam, model: GSASR
) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    names = {id(p): k for k, p in model.named_parameters()}
    state = {
        names[id(p)]: (s["exp_avg"], s["exp_avg_sq"])
        for p, s in opt.state.items()
        if "exp_avg" in s
    }
    return state or None


def _adam_steps(opt: torch.optim.Adam) -> int:
    return max((int(s["step"]) for s in opt.state.values() if "step" in s), default=0)


def _load_adam(opt: torch.optim.Adam, model: GSASR, ckpt: Checkpoint, source: Path) -> None:
    assert ckpt.adam is not None
    params = dict(model.named_parameters())
    for name, (m, v) in ckpt.adam.items():
        p = params.get(name)
        if p is not None and p.requires_grad:
            if m.shape != p.shape or v.shape != p.shape:
                raise GsasrError(f"{source}: Adam's moments of {name} do not fit the model")
            opt.state[p] = {
                "step": torch.tensor(float(ckpt.adam_steps)),
                "exp_avg": m.to(p.device),
                "exp_avg_sq": v.to(p.device),
            }


if __name__ == "__main__":
    main()
