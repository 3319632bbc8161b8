"""The Gaussian field: every rasterizer's input, G Gaussians per LR cell, channel-last."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor


@dataclass(frozen=True)
class GaussianField:
    """Activated Gaussian parameters in LR pixel units; cell (y, x) owns G Gaussians."""

    means: Tensor  # [B, H, W, G, 2] (x, y) inside the cell, in [0, 1]
    sigmas: Tensor  # [B, H, W, G, 2] (sx, sy) in LR pixels, below the render radius
    rhos: Tensor  # [B, H, W, G] correlation in (-1, 1)
    opacities: Tensor  # [B, H, W, G]
    colors: Tensor  # [B, H, W, G, C], C >= 1

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(means, sigmas, rhos, opacities, colors)."""
        return (self.means, self.sigmas, self.rhos, self.opacities, self.colors)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, H, W, G)."""
        b, h, w, g, _ = self.means.shape
        return b, h, w, g

    @property
    def channels(self) -> int:
        """C, the colour channels."""
        return self.colors.shape[-1]

    def check(self) -> None:
        """Raise ValueError unless the five tensors have consistent shapes."""
        if self.means.dim() != 5 or self.means.shape[-1] != 2:
            raise ValueError(f"means must be [B, H, W, G, 2], got {tuple(self.means.shape)}")
        lead = tuple(self.means.shape[:-1])
        expected = {
            "sigmas": (self.sigmas.shape, (*lead, 2)),
            "rhos": (self.rhos.shape, lead),
            "opacities": (self.opacities.shape, lead),
            "colors": (self.colors.shape[:-1], lead),
        }
        for name, (got, want) in expected.items():
            if tuple(got) != tuple(want):
                raise ValueError(f"{name} has shape {tuple(got)}, expected {tuple(want)}")
        if self.colors.dim() != 5 or self.colors.shape[-1] < 1:
            raise ValueError(f"colors must be [B, H, W, G, C], C >= 1, got {self.colors.shape}")

    def float(self) -> GaussianField:
        """The same field in float32 (autocast may leave fp16 or bf16)."""
        return GaussianField(*(t.float() for t in self.tensors()))

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> GaussianField:
        """Cells [y0, y1) x [x0, x1), as views."""
        return GaussianField(*(t[:, y0:y1, x0:x1] for t in self.tensors()))

    def with_colors(self, colors: Tensor) -> GaussianField:
        """The same Gaussians with other colours [B, H, W, G, C']."""
        return replace(self, colors=colors)
