"""gsasr: arbitrary-scale super-resolution by 2D Gaussian splatting."""

from __future__ import annotations

__version__ = "0.1.0"
