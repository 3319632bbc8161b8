"""The GSASR network: an EDSR-baseline encoder and a convolutional Gaussian decoder.

The encoder maps the LR image to 64 features per LR pixel. The decoder turns them,
conditioned on the scale factor, into G = grid^2 Gaussians per LR pixel (one per
sub-cell), each with a mean inside its cell, two standard deviations, a correlation,
an opacity and a colour. The rasterizer in `gsasr_kernels` renders them at any output
size. The decoder is convolutions at LR resolution only, so its cost does not grow
with the scale, and the whole network is translation-equivariant (the basis of exact
tiling).

Two choices make the output keep the colours of its input (`ModelConfig.color` and
`ModelConfig.render`; weights files written before they existed use the legacy pair):
- colour "projected": a Gaussian's colour is its LR pixel's colour plus a residual that
  is projected onto the colours' local span, the span of the differences between the
  pixel and its 8 neighbours (ridge-regularised). Where the neighbourhood is flat the
  residual vanishes; where the input has two colours every Gaussian lies on the line
  through them; elsewhere (photographs, whose neighbourhoods span colour space) the
  residual passes almost unchanged. (Legacy "residual": the free residual, which can
  invent any colour.)
- render "anchored": the Gaussians splat their colours' differences from a base, the
  bilinear interpolation of the cells' mean colours: sum(w c) + (1 - sum(w)) base. Where
  the weights sum to 1 it is the plain sum of GSASR's paper; where they do not (the
  border, a 1x1 image) the base fills in, so flat regions stay flat everywhere, and the
  weights keep the sum's freedom to shape detail. ("normalized": the weighted mean
  sum(w c) / sum(w), which has the same guarantees but loses that freedom. Legacy
  "additive": the plain sum, darker wherever the weights sum below 1, as at the border.)

Whatever the weights and modes, graphics keep their palette: where the 3x3 LR
neighbourhoods of an output pixel's four nearest LR pixels each hold at most
PALETTE_COLOURS distinct colours (pixel art, line art, flat fills; fewer where the image
border cuts a neighbourhood), the pixel is clamped
to the per-channel range of those four LR pixels (`GSASR.guard`). Photographs seldom
have such neighbourhoods (0-1.3% of the LR pixels of the validation photos), and there
the clamp changes no output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

# GaussianField lives with the kernels; `from gsasr_cli.model import GaussianField` still works.
from gsasr_kernels import AxisMap, GaussianField, axis_map, rasterize
from torch import Tensor, nn

COLOR_MODES = ("projected", "residual")
RENDER_MODES = ("anchored", "normalized", "additive")
# Neighbour offsets (dy, dx) that span a pixel's local colours, row-major without the centre.
_NEIGHBORS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
# Weight of the fallback colour (the mean colour of the pixel's own cell) in a normalized
# render: negligible against the sum of weights of a trained or calibrated field (about
# 1), it keeps the output defined where every Gaussian's weight underflows.
_NORMALIZE_EPS = 1e-4
# A 3x3 LR neighbourhood with at most this many distinct colours is graphics (see above).
PALETTE_COLOURS = 4


_INT_BOUNDS = (
    ("n_feats", 1, 512),
    ("n_resblocks", 0, 128),
    ("decoder_blocks", 0, 64),
    ("grid", 1, 8),
    ("radius", 1, 4),
)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters; saved in the weights file's metadata and read back from it."""

    n_feats: int = 64
    n_resblocks: int = 16
    decoder_blocks: int = 2
    grid: int = 2  # Gaussians per LR pixel = grid * grid
    radius: int = 1  # rendering window: (2 radius + 1)^2 LR cells around each output pixel
    sigma_min: float = 0.08
    sigma_max: float = 0.75
    color: str = "projected"  # one of COLOR_MODES
    render: str = "anchored"  # one of RENDER_MODES

    def __post_init__(self) -> None:
        # Bounds that keep a model buildable in memory and renderable by the kernels.
        for name, lo, hi in _INT_BOUNDS:
            value = getattr(self, name)
            if not (isinstance(value, int) and lo <= value <= hi):
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        if not (0 < self.sigma_min < self.sigma_max <= self.radius):
            raise ValueError(
                f"need 0 < sigma_min < sigma_max <= radius, got {self.sigma_min}, "
                f"{self.sigma_max}, {self.radius}"
            )
        if self.color not in COLOR_MODES:
            raise ValueError(f"color must be one of {COLOR_MODES}, got {self.color!r}")
        if self.render not in RENDER_MODES:
            raise ValueError(f"render must be one of {RENDER_MODES}, got {self.render!r}")

    @property
    def gaussians_per_pixel(self) -> int:
        return self.grid * self.grid

    @property
    def param_layout(self) -> tuple[tuple[str, int], ...]:
        """The decoder head's raw outputs per Gaussian, in order: (name, count)."""
        return (("mean", 2), ("sigma", 2), ("rho", 1), ("opacity", 1), ("color", 3))

    @property
    def params_per_gaussian(self) -> int:
        return sum(n for _, n in self.param_layout)

    @property
    def color_radius(self) -> int:
        """LR pixels around a cell that its Gaussians' colours read (beyond the network)."""
        return 1 if self.color == "projected" else 0

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR, no batch norm)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """EDSR-baseline without upsampler; parameter names match LIIF's `encoder.*`."""

    def __init__(self, n_feats: int = 64, n_resblocks: int = 16) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        blocks: list[nn.Module] = [ResBlock(n_feats) for _ in range(n_resblocks)]
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, lr: Tensor) -> Tensor:  # [B, 3, H, W] in [0, 1] -> [B, F, H, W]
        x = self.head((lr - 0.5) / 0.5)
        return x + self.body(x)


class ScaledBlock(nn.Module):
    """A residual block whose hidden activation gets a bias computed from the scale."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:  # bias: [B, F]
        h = torch.relu(self.conv1(x) + bias[:, :, None, None])
        return x + self.conv2(h)


class Decoder(nn.Module):
    """Features and scale -> raw Gaussian parameters, G * K channels per LR pixel."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        f = cfg.n_feats
        self.scale_mlp = nn.Sequential(
            nn.Linear(2, f), nn.ReLU(inplace=True), nn.Linear(f, f * cfg.decoder_blocks)
        )
        self.blocks = nn.ModuleList(ScaledBlock(f) for _ in range(cfg.decoder_blocks))
        self.head = nn.Conv2d(f, cfg.gaussians_per_pixel * cfg.params_per_gaussian, 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)  # type: ignore[arg-type]  # Conv2d has a bias here

    def forward(self, feat: Tensor, inv_scale: Tensor) -> Tensor:
        # feat: [B, F, H, W]; inv_scale: [B, 2] = (1/sy, 1/sx) -> [B, G*K, H, W]
        biases = self.scale_mlp(inv_scale).chunk(len(self.blocks), dim=1)
        x = feat
        for block, bias in zip(self.blocks, biases, strict=True):
            x = block(x, bias)
        return self.head(x)


class GSASR(nn.Module):
    """LR image -> Gaussian field -> rendered image at any (per-axis) scale."""

    centre_logit: Tensor  # [G, 2] buffer: logit of each sub-cell centre
    opacity_bias: Tensor  # [] buffer: the calibrated opacity logit

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.encoder = Encoder(self.cfg.n_feats, self.cfg.n_resblocks)
        self.decoder = Decoder(self.cfg)
        n = self.cfg.grid
        centres = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        # Logit of each sub-cell centre: a zero raw offset puts the mean there.
        self.register_buffer("centre_logit", torch.logit(torch.stack((cx, cy), -1).view(-1, 2)))
        self.register_buffer("opacity_bias", torch.tensor(_initial_opacity_logit(self.cfg)))

    def gaussians(self, lr: Tensor, scale: tuple[float, float]) -> GaussianField:
        """Predict the Gaussian field of `lr` ([B, 3, H, W] in [0, 1]) for `scale` = (sy, sx)."""
        return self.decode(lr, self.encoder(lr), scale)

    def decode(self, lr: Tensor, feat: Tensor, scale: tuple[float, float]) -> GaussianField:
        """The Gaussian field from encoder features `feat` [B, F, H, W] of `lr`."""
        b, _, h, w = lr.shape
        c = self.cfg
        g, k = c.gaussians_per_pixel, c.params_per_gaussian
        inv = lr.new_tensor([[1.0 / scale[0], 1.0 / scale[1]]]).expand(b, 2)
        raw = self.decoder(feat, inv)
        raw = raw.view(b, g, k, h, w).permute(0, 3, 4, 1, 2)  # [B, H, W, G, K]
        mean, sigma, rho, opacity, color = raw.split([n for _, n in c.param_layout], dim=-1)
        return GaussianField(
            means=_sigmoid(mean + self.centre_logit),
            sigmas=c.sigma_min + (c.sigma_max - c.sigma_min) * _sigmoid(sigma),
            rhos=0.99 * torch.tanh(rho[..., 0]),
            opacities=_sigmoid(opacity[..., 0] + self.opacity_bias),
            colors=_colors(lr, color, c.color),
        )

    def guard(self, lr: Tensor) -> Tensor:
        """Per LR pixel of `lr` [B, 3, H, W], the bounds its colour sets on the output
        pixels around it -> [B, 2, 3, H, W]: (low, high) = its colour where it is
        graphics, (-inf, +inf) elsewhere. Graphics: its 3x3 neighbourhood holds at most
        PALETTE_COLOURS distinct colours, or where the border cuts the neighbourhood, as
        few in proportion (rounded up: 3 of 6 pixels on an edge, 2 of 4 in a corner).

        It reads one pixel around each, so a crop of it is exact where the `lr` it came
        from reaches one pixel beyond the crop (or to the image border)."""
        h, w = lr.shape[-2:]
        x = lr.float()
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=math.nan)
        window = [padded[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
        inside = torch.zeros_like(x[:, 0], dtype=torch.int32)
        distinct = torch.zeros_like(inside)
        for i, colour in enumerate(window):
            new = ~colour[:, 0].isnan()  # NaN equals nothing, itself included
            inside += new.to(torch.int32)
            for earlier in window[:i]:
                new &= ~(colour == earlier).all(1)
            distinct += new.to(torch.int32)
        palette = (distinct <= (PALETTE_COLOURS * inside + 8) // 9)[:, None]
        inf = torch.tensor(math.inf, dtype=x.dtype, device=x.device)
        return torch.stack((torch.where(palette, x, -inf), torch.where(palette, x, inf)), 1)

    def render(self, field: GaussianField, rows: AxisMap, cols: AxisMap, guard: Tensor) -> Tensor:
        """Render a field at the output pixels `rows` x `cols` -> [B, 3, Ho, Wo]; `guard`
        is `self.guard` of the LR image, cropped to the field's cells."""
        return _clamp_to_support(self._splat(field, rows, cols), guard, rows, cols)

    def _splat(self, field: GaussianField, rows: AxisMap, cols: AxisMap) -> Tensor:
        mode, colors = self.cfg.render, field.colors
        if mode == "additive":
            return rasterize(field, rows, cols, self.cfg.radius)
        # One more channel carries the sum of weights.
        colors = torch.cat((colors, torch.ones_like(colors[..., :1])), dim=-1)
        out = rasterize(field.with_colors(colors), rows, cols, self.cfg.radius)
        total, weight = out[:, :-1], out[:, -1:]
        cell_colors = field.colors.mean(dim=3)  # [B, H, W, 3]
        if mode == "anchored":  # base + sum w (c - base)
            return total + (1.0 - weight) * _bilinear(cell_colors, rows, cols)
        # Normalized, with a fallback: the mean colour of the pixel's own cell, tiny weight.
        own = cell_colors.index_select(1, rows.cell.to(cell_colors.device))
        own = own.index_select(2, cols.cell.to(cell_colors.device)).permute(0, 3, 1, 2)
        return (total + _NORMALIZE_EPS * own) / (weight + _NORMALIZE_EPS)

    def forward(
        self, lr: Tensor, out_size: tuple[int, int], scale: tuple[float, float] | None = None
    ) -> Tensor:
        """Upscale `lr` [B, 3, H, W] to `out_size` = (Ho, Wo); `scale` defaults to Ho/H, Wo/W."""
        h, w = lr.shape[-2:]
        sy, sx = scale or (out_size[0] / h, out_size[1] / w)
        field = self.gaussians(lr, (sy, sx))
        rows, cols = axis_map(out_size[0], sy, h), axis_map(out_size[1], sx, w)
        return self.render(field, rows, cols, self.guard(lr))


def _support(axis: AxisMap, n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For each output pixel along an axis, its two nearest of the `n` LR pixel centres
    (the one before, the one after; past the outer centres the edge pixel twice) and its
    position between them, in [0, 1]."""
    before = axis.frac < 0.5  # the left/upper neighbour's centre is the nearer one
    i0 = axis.cell - before.to(axis.cell.dtype)
    t = axis.frac + torch.where(before, 0.5, -0.5)
    return i0.clamp(0, n - 1).to(device), (i0 + 1).clamp(0, n - 1).to(device), t.to(device)


def _bilinear(cells: Tensor, rows: AxisMap, cols: AxisMap) -> Tensor:
    """Cell colours [B, H, W, C] interpolated bilinearly between cell centres at the output
    pixels `rows` x `cols` -> [B, C, Ho, Wo]; past the outer centres the edge cell repeats.

    Only the pixel's own cell and its nearest neighbour per axis are read, so a field
    cropped to the rendered cells plus `radius` >= 1 gives the same pixels (exact tiling).
    """
    y0, y1, ty = _support(rows, cells.shape[1], cells.device)
    x0, x1, tx = _support(cols, cells.shape[2], cells.device)
    top, bottom = cells.index_select(1, y0), cells.index_select(1, y1)
    band = top + (bottom - top) * ty.to(cells.dtype)[None, :, None, None]  # [B, Ho, W, C]
    left, right = band.index_select(2, x0), band.index_select(2, x1)
    return (left + (right - left) * tx.to(cells.dtype)[None, None, :, None]).permute(0, 3, 1, 2)


def _clamp_to_support(out: Tensor, guard: Tensor, rows: AxisMap, cols: AxisMap) -> Tensor:
    """`out` [B, 3, Ho, Wo] clamped per channel between the lowest low and the highest high
    of `guard` [B, 2, 3, H, W] at each output pixel's four nearest LR pixels (`_support`):
    the range of their colours where all four are graphics, no bound elsewhere. Like
    `_bilinear`, it reads only cells within one of the pixel's own (exact tiling)."""
    y0, y1, _ = _support(rows, guard.shape[-2], guard.device)
    x0, x1, _ = _support(cols, guard.shape[-1], guard.device)
    g = guard.to(out.dtype)
    # Rows first, then columns; the low bounds by min, the high bounds by max.
    low = torch.minimum(g[:, 0].index_select(2, y0), g[:, 0].index_select(2, y1))
    out = torch.maximum(out, torch.minimum(low.index_select(3, x0), low.index_select(3, x1)))
    high = torch.maximum(g[:, 1].index_select(2, y0), g[:, 1].index_select(2, y1))
    return torch.minimum(out, torch.maximum(high.index_select(3, x0), high.index_select(3, x1)))


def _colors(lr: Tensor, raw: Tensor, mode: str) -> Tensor:
    """Gaussian colours [B, H, W, G, 3] from the LR image [B, 3, H, W] and the raw colour
    residuals [B, H, W, G, 3] of the head."""
    centre = lr.permute(0, 2, 3, 1)[:, :, :, None, :]  # [B, H, W, 1, 3]
    if mode == "residual":
        return centre + raw
    return centre + _project(lr, raw)


# Ridge of the projection, in squared colour units: neighbourhoods whose colours vary by
# less than about 3 levels in a direction get no residual in that direction.
_PROJECTION_RIDGE = 1e-4


def _project(lr: Tensor, r: Tensor) -> Tensor:
    """Residuals `r` [B, H, W, G, 3] projected onto each pixel's local colour span.

    With D the differences between the pixel's colour and its 8 neighbours' (the border
    repeats itself), M = sum_k d_k d_k^T and A = M + ridge I, the projection is
    A^-1 M r: the image of M r, a combination of the d_k, so for two colours it is along
    their difference. The 3x3 inverse is written out (cofactors, in float64), so that
    every pixel rounds alike whatever the tensor's size (exact tiling) and the
    cancellation in the cofactors of a rank-1 M stays far below a level.
    """
    h, w = lr.shape[-2:]
    x = lr.double()
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    d = torch.stack(
        [padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] - x for dy, dx in _NEIGHBORS], 1
    )  # [B, 8, 3, H, W]
    m = [[(d[:, :, i] * d[:, :, j]).sum(1) for j in range(3)] for i in range(3)]  # [B, H, W]
    a = [[m[i][j] + (_PROJECTION_RIDGE if i == j else 0.0) for j in range(3)] for i in range(3)]
    cof = [
        [
            a[(i + 1) % 3][(j + 1) % 3] * a[(i + 2) % 3][(j + 2) % 3]
            - a[(i + 1) % 3][(j + 2) % 3] * a[(i + 2) % 3][(j + 1) % 3]
            for j in range(3)
        ]
        for i in range(3)
    ]
    det = a[0][0] * cof[0][0] + a[0][1] * cof[0][1] + a[0][2] * cof[0][2]
    rd = r.double()
    mr = [_dot3([m[i][j][..., None] for j in range(3)], rd.unbind(-1)) for i in range(3)]
    out = [_dot3([cof[j][i][..., None] for j in range(3)], mr) for i in range(3)]  # A sym.
    return (torch.stack(out, -1) / det[..., None, None]).to(r.dtype)


def _dot3(a: list[Tensor], b: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sigmoid(x: Tensor) -> Tensor:
    """sigmoid(x), written through tanh so that every element rounds alike.

    PyTorch's CPU sigmoid computes the tail of each vector loop with scalar code that
    rounds 1 ulp differently, at positions that depend on the tensor's size: the
    Gaussians of a tile would then differ from those of the whole image in the last bit.
    """
    return 0.5 * torch.tanh(0.5 * x) + 0.5


def _initial_opacity_logit(cfg: ModelConfig) -> float:
    """Opacity logit that makes a field of untrained Gaussians sum to about 1 everywhere.

    The decoder starts with zero raw outputs: every Gaussian at its sub-cell centre
    with the middle of the sigma range and no correlation. Rendering such a field with
    opacity 1 gives the coverage; opacity 1/coverage then reproduces the LR colours.
    """
    with torch.device("cpu"):  # a number, also for a model built on the meta device
        return _opacity_logit_on_cpu(cfg)


def _opacity_logit_on_cpu(cfg: ModelConfig) -> float:
    n, g = 6, cfg.gaussians_per_pixel
    centres = (torch.arange(cfg.grid, dtype=torch.float64) + 0.5) / cfg.grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    means = torch.stack((cx, cy), -1).view(1, 1, 1, g, 2).expand(1, n, n, g, 2)
    sigma = 0.5 * (cfg.sigma_min + cfg.sigma_max)
    # The reference rasterizer in float64, whatever path GSASR_RASTERIZER selects.
    field = GaussianField(
        means.contiguous(),
        torch.full((1, n, n, g, 2), sigma, dtype=torch.float64),
        torch.zeros(1, n, n, g, dtype=torch.float64),
        torch.ones(1, n, n, g, dtype=torch.float64),
        torch.ones(1, n, n, g, 1, dtype=torch.float64),
    )
    out = rasterize(
        field, axis_map(4 * n, 4.0, n), axis_map(4 * n, 4.0, n), cfg.radius, impl="torch"
    )
    inner = out[0, 0, 8:-8, 8:-8].mean().item()  # away from the zero-padded border
    alpha = min(0.99, 1.0 / inner)
    return math.log(alpha / (1.0 - alpha))


def count_macs_per_lr_pixel(cfg: ModelConfig) -> dict[str, int]:
    """Multiply-adds per LR pixel of encoder and decoder (convolutions only)."""
    f = cfg.n_feats
    conv3 = 9 * f * f
    return {
        "encoder": 9 * 3 * f + (2 * cfg.n_resblocks + 1) * conv3,
        "decoder": 2 * cfg.decoder_blocks * conv3
        + f * cfg.gaussians_per_pixel * cfg.params_per_gaussian,
    }
