"""Compile the Triton kernels for a GPU that is not here, and read what ptxas made of them.

Triton compiles for the target its driver reports; `offline(arch)` swaps in a driver that
reports `GPUTarget("cuda", arch, 32)` and never launches, so `JITFunction.warmup` runs
Triton's own pipeline (TTIR, TTGIR, LLVM, PTX, then the ptxas inside the Triton wheel)
on the very arguments the wrapper would launch with, binding and specialising them as a
real launch does. From the cubin: registers, shared and local memory (cuobjdump), and the
SASS with line info (nvdisasm), from which `loop_nest` finds the loops.

Used by `compile_check.py` (CI) and `static_report.py`; needs Triton and a CPU only.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import re
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field

import torch

# Hardware limits per target (CUDA C Programming Guide, "Compute Capabilities" table):
# registers per thread and per block, shared memory per block with opt-in.
LIMITS = {
    80: {"regs": 255, "regs_per_block": 65536, "smem": 166912},
    86: {"regs": 255, "regs_per_block": 65536, "smem": 101376},
    89: {"regs": 255, "regs_per_block": 65536, "smem": 101376},
    90: {"regs": 255, "regs_per_block": 65536, "smem": 232448},
}


class _OfflineDriver:
    """Just enough of a Triton driver to compile for `arch` without a GPU."""

    def __init__(self, arch: int) -> None:
        self.arch = arch

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self) -> str:
        return f"offline-sm_{self.arch}"  # one binder and kernel cache per target

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


@contextlib.contextmanager
def offline(arch: int):
    """Make Triton compile for compute capability `arch` (80, 86, 89, 90) in this block."""
    from triton.runtime.driver import driver

    previous = driver._active
    driver.set_active(_OfflineDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


def jit_function(kernel):
    """The `triton.jit` function under a kernel (itself, or what an autotuner wraps)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        kernel = kernel.fn
    return kernel


def compile_launch(launch, config, arch: int):
    """Compile one `triton_rasterize.Launch` with one autotune `config` for `arch`;
    returns Triton's CompiledKernel (asm: ttgir, ptx, cubin; metadata: shared, ...)."""
    with offline(arch):
        kwargs = {**launch.meta, **config.all_kwargs()}
        return jit_function(launch.kernel).warmup(*launch.args, grid=(1,), **kwargs)


def _tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        from triton import knobs

        path = getattr(knobs.nvidia, name).path
    return path


def _on_cubin(cubin: bytes, *cmd: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([*cmd, f.name], capture_output=True, text=True, check=True)
    return done.stdout


@dataclass(frozen=True)
class Instr:
    addr: int
    opcode: str  # e.g. "FFMA", "LDG.E.128", "@P0 BRA" without the predicate
    text: str
    line: int | None  # line in the kernel's source file, None for inlined library code
    target: str | None  # branch target label


@dataclass
class Loop:
    start: int  # address range [start, end] of the body, back edge at `end`
    end: int
    instrs: list[Instr]
    var: str | None = None  # the source `for` loop it implements (its target name)
    children: list[Loop] = field(default_factory=list)


@dataclass(frozen=True)
class Resources:
    regs: int
    shared: int  # bytes, dynamic (Triton's) plus static
    local: int  # bytes of stack and local memory per thread: spills (or local arrays)
    spill_instrs: int  # STL/LDL instructions in the SASS (0 when not disassembled)
    sass: tuple[Instr, ...]  # empty when not disassembled


_LINE = re.compile(r'//## File "(?P<file>[^"]+)", line (?P<line>\d+)')
_INSTR = re.compile(r"/\*(?P<addr>[0-9a-f]{4,})\*/\s+(?P<body>[^;]*);")
_LABEL = re.compile(r"^(?P<label>\.L_x_\d+):")


def parse_sass(text: str, source_file: str) -> list[Instr]:
    """nvdisasm -g output -> instructions with their kernel source line (if any)."""
    out, line, labels, pending = [], None, {}, []
    for raw in text.splitlines():
        stripped = raw.strip()
        if m := _LINE.search(stripped):
            same = os.path.realpath(m["file"]) == os.path.realpath(source_file)
            line = int(m["line"]) if same else None
            continue
        if m := _LABEL.match(stripped):
            pending.append(m["label"])
            continue
        if m := _INSTR.search(stripped):
            body = m["body"].strip()
            words = body.split()
            opcode = words[1] if words and words[0].startswith("@") else (words or [""])[0]
            target = re.search(r"`\((\.L_x_\d+)\)", body)
            instr = Instr(int(m["addr"], 16), opcode, body, line, target and target[1])
            for label in pending:
                labels[label] = instr.addr
            pending = []
            out.append(instr)
    # Resolve branch targets to addresses once every label is known.
    return [
        Instr(i.addr, i.opcode, i.text, i.line, str(labels.get(i.target, -1)) if i.target else None)
        for i in out
    ]


def resources(kernel, source_file: str, sass: bool = True) -> Resources:
    """Registers, shared memory, stack and local memory of a CompiledKernel (cuobjdump),
    and with `sass` its disassembly with line info and spill instructions (nvdisasm)."""
    cubin = kernel.asm["cubin"]
    usage = _on_cubin(cubin, _tool("cuobjdump"), "-res-usage")
    fields = dict(re.findall(r"(\w+):(\d+)", usage.split("Function", 1)[-1]))
    code = parse_sass(_on_cubin(cubin, _tool("nvdisasm"), "-g", "-c"), source_file) if sass else []
    return Resources(
        regs=int(fields.get("REG", 0)),
        shared=int(kernel.metadata.shared) + int(fields.get("SHARED", 0)),
        local=int(fields.get("STACK", 0)) + int(fields.get("LOCAL", 0)),
        spill_instrs=sum(i.opcode.startswith(("STL", "LDL")) for i in code),
        sass=tuple(code),
    )


def over_limits(res: Resources, arch: int, num_warps: int) -> list[str]:
    """Why these resources do not fit `arch` (empty when they do), spills included."""
    lim, why = LIMITS[arch], []
    if res.regs > lim["regs"]:
        why.append(f"{res.regs} registers > {lim['regs']}")
    if res.regs * 32 * num_warps > lim["regs_per_block"]:
        why.append(f"{res.regs} registers x {32 * num_warps} threads > {lim['regs_per_block']}")
    if res.shared > lim["smem"]:
        why.append(f"{res.shared} B shared > {lim['smem']}")
    if res.local or res.spill_instrs:
        why.append(f"spills: {res.local} B stack/local, {res.spill_instrs} STL/LDL")
    return why


def _source_loops(jit_fn) -> list[tuple[str, int, int]]:
    """(target name, first line, last line) of every runtime `for` loop in a kernel
    (`range`; `tl.static_range` unrolls), with file line numbers."""
    lines, first = inspect.getsourcelines(jit_fn.fn)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    loops = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.For) or not isinstance(node.iter, ast.Call):
            continue
        func = node.iter.func
        if isinstance(func, ast.Name) and func.id == "range":
            name = node.target.id if isinstance(node.target, ast.Name) else "?"
            loops.append((name, first + node.lineno - 1, first + node.end_lineno - 1))
    return loops


def loop_nest(sass: tuple[Instr, ...], jit_fn) -> list[Loop]:
    """The SASS loops (from backward branches), nested, each named after the source
    loop that holds most of its instructions' lines; returns the outermost loops."""
    loops = []
    for i in sass:
        if i.opcode == "BRA" and i.target is not None and 0 <= int(i.target) <= i.addr:
            body = [j for j in sass if int(i.target) <= j.addr <= i.addr]
            if len(body) > 1:  # not the `BRA self` that pads the end of the code
                loops.append(Loop(int(i.target), i.addr, body))
    loops.sort(key=lambda lp: lp.start - lp.end)  # outer (longer) first
    roots: list[Loop] = []
    for lp in loops:
        parent = None
        for other in loops:
            if other is lp or not (other.start <= lp.start and lp.end <= other.end):
                continue
            if parent is None or other.end - other.start < parent.end - parent.start:
                parent = other
        (parent.children if parent else roots).append(lp)
    # A loop's back edge carries the line of the `for` it implements: name it after that
    # loop (None for a loop of library code, e.g. a 64-bit division subroutine).
    headers = {a: n for n, a, _ in _source_loops(jit_fn)}
    for lp in loops:
        lp.var = headers.get(lp.instrs[-1].line)
    return roots


def executed(sass: tuple[Instr, ...], roots: list[Loop], trips: dict[str, float]) -> dict:
    """Instructions one warp issues, by class, when each source loop `var` runs
    `trips[var]` times per entry: {"all": n, "MUFU": n, "LDG": n, ...}."""
    weight = {i.addr: 1.0 for i in sass}

    def visit(loop: Loop, outer: float) -> None:
        if loop.var is not None and loop.var not in trips:
            raise KeyError(f"no trip count for the loop over {loop.var!r} (have {list(trips)})")
        n = outer * trips.get(loop.var, 1.0)  # library loops: counted once
        for i in loop.instrs:
            weight[i.addr] = n
        for child in loop.children:
            visit(child, n)

    for root in roots:
        visit(root, 1.0)
    counts: dict[str, float] = {}
    for i in sass:
        if i.opcode in ("EXIT", "NOP") or (i.opcode == "BRA" and i.target == str(i.addr)):
            continue
        kind = i.opcode.split(".")[0]
        counts["all"] = counts.get("all", 0.0) + weight[i.addr]
        counts[kind] = counts.get(kind, 0.0) + weight[i.addr]
    return counts
