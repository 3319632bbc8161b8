"""gsasr: arbitrary-scale super-resolution by 2D Gaussian splatting.

    from gsasr_cli import load_model, upscale
    big = upscale(image, scale=3.7, model=load_model())

Importing this package is cheap: torch loads with the first call that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AlphaMode",
    "GsasrError",
    "InvalidRequest",
    "Precision",
    "__version__",
    "default_model",
    "load_model",
    "upscale",
]

if TYPE_CHECKING:
    from .api import default_model, load_model, upscale
    from .errors import GsasrError, InvalidRequest
    from .options import AlphaMode, Precision

_LAZY = {
    "load_model": "api",
    "upscale": "api",
    "default_model": "api",
    "GsasrError": "errors",
    "InvalidRequest": "errors",
    "AlphaMode": "options",
    "Precision": "options",
}


def __getattr__(name: str) -> Any:
    """Load the API on first use, so that `gsasr --version` need not import torch."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
