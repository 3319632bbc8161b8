"""What a training step costs on this CPU, option by option, measured side by side.

    python benchmarks/bench_train_step.py [--data data/train] [--steps 6] [--rounds 3]

Each configuration runs the real `train_step` (forward, L1, backward, Adam) of the
relay run's model on batches from `PatchSampler`, with the same scales in the same
order. Configurations are interleaved round by round (the machine is shared and noisy);
the table gives the median seconds per step over all timed steps, steps/s, and LR and HR
pixels per second (HR: the pixels the loss scores). "data" is where batches are made:
inline in the step's process, or in a worker process ahead of it (`--workers 1`);
"sample s" is the sampler alone.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from gsasr_cli.model import GSASR, ModelConfig  # noqa: E402
from gsasr_cli.train import PatchSampler, TrainConfig, batches, load_images, train_step  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    tc: TrainConfig
    threads: int
    workers: int


def cases(base: TrainConfig) -> list[Case]:
    small = replace(base, patch=32, batch=8)
    paper = replace(base, patch=48, batch=16)
    relay = replace(small, batch=16, sample=48)  # the relay run's steps
    return [
        Case("32x8, decoder only, 1 thread, inline data", small, 1, 0),
        Case("32x8, decoder only, 1 thread, worker data", small, 1, 1),
        Case("32x16, decoder only, 1 thread, worker data", replace(small, batch=16), 1, 1),
        Case("32x16, loss on 48 rows x 48 cols, 1 thread", relay, 1, 1),
        Case("32x16, loss on 48 rows x 48 cols, 2 threads", relay, 2, 1),
        Case("48x16, decoder only, 1 thread, worker data", paper, 1, 1),
        Case("48x16, decoder only, 2 threads, worker data", paper, 2, 1),
        Case(
            "48x16, decoder only, 2 threads, channels_last",
            replace(paper, channels_last=True),
            2,
            1,
        ),
        Case("48x16, decoder only, 2 threads, bf16 autocast", replace(paper, bf16=True), 2, 1),
        Case("48x16, whole network, 1 thread", replace(paper, encoder_lr=2e-5), 1, 1),
        Case("48x16, whole network, 2 threads", replace(paper, encoder_lr=2e-5), 2, 1),
        Case(
            "48x16, whole network, 2 threads, bf16",
            replace(paper, encoder_lr=2e-5, bf16=True),
            2,
            1,
        ),
    ]


class Runner:
    """One configuration: its model, optimiser and batch stream, kept across rounds."""

    def __init__(self, case: Case, model: GSASR, images: list[np.ndarray], seed: int) -> None:
        self.case, self.model = case, copy.deepcopy(model).train()
        tc = case.tc
        if tc.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.encoder.requires_grad_(tc.encoder_lr > 0)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], 1e-5)
        sampler = PatchSampler(images, tc.patch, tc.batch, (1.0, 4.0), 0.0, seed)
        self.stream = batches(sampler, case.workers)
        self.times: list[float] = []
        self.lr_px = self.hr_px = 0

    def step(self, timed: bool) -> None:
        torch.set_num_threads(self.case.threads)
        t0 = time.perf_counter()
        lr, hr, scale = next(self.stream)
        loss = train_step(self.model, lr, hr, scale, self.case.tc)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dt = time.perf_counter() - t0
        if timed:
            self.times.append(dt)
            self.lr_px += lr.shape[0] * lr.shape[-2] * lr.shape[-1]
            k = self.case.tc.sample or max(hr.shape[-2:])  # HR pixels the loss scores
            self.hr_px += hr.shape[0] * min(hr.shape[-2], k) * min(hr.shape[-1], k)


def sampler_seconds(images: list[np.ndarray], tc: TrainConfig, n: int = 10) -> float:
    torch.set_num_threads(1)
    sampler = PatchSampler(images, tc.patch, tc.batch, (1.0, 4.0), 0.0, 0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sampler()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/train"))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="run only the cases whose name contains this")
    args = ap.parse_args()

    images = load_images(args.data)
    model = GSASR(ModelConfig())
    runners = [
        Runner(c, model, images, seed=i)
        for i, c in enumerate(cases(TrainConfig()))
        if not args.only or args.only in c.name
    ]
    for r in runners:  # warm-up: allocators, oneDNN primitives, the worker's first batches
        r.step(timed=False)
        r.step(timed=False)
    for _ in range(args.rounds):
        for r in runners:
            for _ in range(args.steps):
                r.step(timed=True)

    print(f"# Training step cost, {describe(torch.device('cpu'))}")
    print(
        f"# {len(images)} training images; {args.rounds} rounds x {args.steps} timed steps each\n"
    )
    print("| configuration | median s/step | steps/s | LR px/s | HR px/s | sample s |")
    print("|---|---|---|---|---|---|")
    for r in runners:
        med = statistics.median(r.times)
        total = sum(r.times)
        print(
            f"| {r.case.name} | {med:.3f} | {1 / med:.2f} | {r.lr_px / total:,.0f} | "
            f"{r.hr_px / total:,.0f} | {sampler_seconds(images, r.case.tc):.3f} |"
        )


if __name__ == "__main__":
    main()
