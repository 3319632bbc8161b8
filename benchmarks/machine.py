"""The line every benchmark prints: the hardware and software its numbers come from."""

from __future__ import annotations

import platform

import torch


def describe(device: torch.device) -> str:
    """CPU or GPU model, torch (and Triton) versions, threads."""
    sw = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    try:
        import triton

        sw += f", triton {triton.__version__}"
    except ImportError:
        sw += ", triton not installed"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, {sw}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu} ({torch.backends.cpu.get_cpu_capability()}), {sw}"
