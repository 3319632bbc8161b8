"""Launch plumbing of the Triton rasterizer: the output grid by LR cell, and bound launches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import triton
from torch import Tensor

from .coords import AxisMap


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@dataclass(frozen=True)
class Samples:
    """The output grid, by LR cell: what both kernels index instead of per-pixel cells."""

    row_first: Tensor  # [H + 1] int64: output rows of LR row y are [row_first[y], row_first[y+1])
    row_frac: Tensor  # [Ho] fp32
    col_first: Tensor  # [W + 1] int64
    col_frac: Tensor  # [Wo] fp32
    max_rows: int  # most output rows in one LR row
    max_cols: int

    @staticmethod
    def of(rows: AxisMap, cols: AxisMap, h: int, w: int, device: torch.device) -> Samples:
        """From the axis maps (nondecreasing cells in [0, h) and [0, w)); computed where the
        maps live (the CPU, as `axis_map` makes them: no device synchronisation)."""

        def first(cell: Tensor, n: int) -> Tensor:
            k = torch.arange(n + 1, dtype=torch.int64, device=cell.device)
            return torch.searchsorted(cell.to(torch.int64).contiguous(), k, side="left")

        rf, cf = first(rows.cell, h), first(cols.cell, w)
        return Samples(
            rf.to(device),
            rows.frac.to(device, torch.float32).contiguous(),
            cf.to(device),
            cols.frac.to(device, torch.float32).contiguous(),
            int((rf[1:] - rf[:-1]).max()) if h else 0,
            int((cf[1:] - cf[:-1]).max()) if w else 0,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.row_frac.numel(), self.col_frac.numel()


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully bound: what runs it, and what the compile check compiles."""

    kernel: Any  # a triton.jit or triton.autotune kernel
    grid: Callable[[dict], tuple[int, ...]]
    args: tuple  # positional arguments, in the kernel's order
    meta: dict  # constexpr arguments and compile options the autotuner does not choose

    @property
    def configs(self) -> list:
        """The autotune configs, or the one implied by `meta` for a plain kernel."""
        return getattr(self.kernel, "configs", None) or [
            triton.Config({}, num_warps=self.meta.get("num_warps", 4))
        ]

    def __call__(self) -> None:
        with _device_guard(self.args[0]):
            self.kernel[self.grid](*self.args, **self.meta)
