"""`gsasr upscale` under random flag combinations and random or mutated files.

Whatever hypothesis draws, the command must end with exit code 0, 1 or 2, print no
traceback, leave every input byte for byte as it was, leave no temporary file, and every
output it reports as written must exist and decode at the size it reports.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gsasr_cli.cli import main


def _encoded(ext: str, h: int, w: int, seed: int, channels: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return cv2.imencode(ext, img)[1].tobytes()


FILES = {
    "a.png": _encoded(".png", 6, 5, 0),
    "b.jpg": _encoded(".jpg", 5, 7, 1),
    "a.jpg": _encoded(".jpg", 4, 4, 2),
    "c.bmp": _encoded(".bmp", 3, 3, 3),
    "d.png": _encoded(".png", 5, 5, 4, channels=4),
    "e.webp": _encoded(".webp", 4, 6, 5),
    "f.tif": _encoded(".tif", 5, 4, 6),
    "empty.png": b"",
    "text.jpg": b"not an image at all",
    "sub/g.PNG": _encoded(".png", 4, 5, 7),
    ".hidden.png": _encoded(".png", 4, 4, 8),
}

SIZINGS = [
    ["-s", "2"],
    ["-s", "1.5"],
    ["-s", "3"],
    ["-s", "2.5"],
    ["-s", "1"],
    ["--width", "12"],
    ["--height", "9"],
    ["--size", "11x13"],
    ["--fit", "20x10"],
    ["-s", "0.5"],
    ["-s", "nan"],
    ["-s", "1e9"],
    ["--width", "2"],
    ["--size", "0x5"],
    ["-s", "2", "--width", "9"],
]

FLAG_CHOICES = [
    ["--format", "png"],
    ["--format", "jpg"],
    ["--format", "webp"],
    ["--format", "gif"],
    ["--overwrite"],
    ["--skip-existing"],
    ["--dry-run"],
    ["--json"],
    ["-r"],
    ["-q"],
    ["-v"],
    ["--glob", "*.png"],
    ["--glob", "**/*.png"],
    ["--exclude", "b.*"],
    ["--name", "{stem}_up{ext}"],
    ["--name", "{bogus}"],
    ["--name", "../{stem}{ext}"],
    ["--tile", "16"],
    ["--tile", "7"],
    ["--quality", "50"],
    ["--alpha", "model"],
    ["--alpha", "magic"],
    ["--precision", "fp16"],
    ["--tta"],
    ["--device", "cpu"],
    ["--device", "tpu"],
    ["--max-output-pixels", "50"],
]

OUTPUTS = [None, None, "out/", "out/", "out", "one.png", "one.jpg", "-", "a.png", "sub/"]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    inputs=st.lists(
        st.sampled_from(["in", "in", *FILES, *FILES, "missing.png", "-"]), min_size=1, max_size=3
    ),
    sizing=st.sampled_from(SIZINGS),
    flags=st.lists(st.sampled_from(FLAG_CHOICES), max_size=3),
    output=st.sampled_from(OUTPUTS),
    mutate=st.lists(st.tuples(st.sampled_from(sorted(FILES)), st.integers(0, 400)), max_size=2),
)
def test_random_commands_lose_nothing(inputs, sizing, flags, output, mutate, capsys, monkeypatch):
    root = Path(tempfile.mkdtemp(prefix="gsasr-fuzz-"))
    try:
        folder = root / "in"
        for name, data in FILES.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            data = bytearray(data)
            for target, pos in mutate:
                if target == name and data:
                    data[pos % len(data)] ^= 0x5A
            path.write_bytes(bytes(data))
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        monkeypatch.chdir(folder)
        argv = ["upscale", *[("." if i == "in" else i) for i in inputs], *sizing]
        for flag in flags:
            argv += flag
        if output is not None:
            argv += ["-o", output]
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(FILES["a.png"])))
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert code in (0, 1, 2), (argv, code, err)
        event(f"exit {code}")
        assert "Traceback" not in err and "Traceback" not in out, (argv, err)
        for path, data in before.items():  # every input intact
            assert path.is_file() and path.read_bytes() == data, (argv, path)
        leftovers = [p for p in root.rglob("*") if p.name.endswith(".part") or ".gsasr" in p.name]
        assert not leftovers, (argv, leftovers)
        if "--json" in argv and output != "-":
            for line in out.splitlines():
                record = json.loads(line)
                if record["status"] == "ok" and record["output"] not in (None, "<stdout>"):
                    written = cv2.imread(str(folder / record["output"]), cv2.IMREAD_UNCHANGED)
                    assert written is not None, (argv, record)
                    assert [written.shape[1], written.shape[0]] == record["output_size"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
