"""Image I/O under hostile and unusual inputs (issue #13): metadata that must not corrupt
outputs, decompression bombs, unbounded reads, format limits, the atomic writer, codec
noise, multi-frame inputs, transparency."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL import ImageOps

from gsasr_cli.errors import GsasrError
from gsasr_cli.imageio import (
    FORMATS,
    MAX_INPUT_PIXELS,
    GsasrWarning,
    Image,
    OutputExists,
    check_name,
    check_output_size,
    decode,
    encode,
    parse_color,
    probe_bytes,
    probe_image,
    read_image,
    read_stdin,
    same_format,
    write_atomic,
)

MAKE = 0x010F


def rgb8(h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    """A smooth RGB image (so lossy formats stay close), as uint8 [H, W, 3]."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([y * 255 / h, x * 255 / w, (x + y) * 127 / (h + w)], axis=2)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def pil_bytes(frames: list[PILImage.Image], fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=len(frames) > 1, append_images=frames[1:], **options)
    return buf.getvalue()


def doubled(image: Image) -> Image:
    """A stand-in for the model: every pixel repeated 2x2, metadata carried."""
    rgb = np.repeat(np.repeat(image.rgb, 2, 0), 2, 1)
    alpha = None if image.alpha is None else np.repeat(np.repeat(image.alpha, 2, 0), 2, 1)
    return Image(rgb, alpha, image.bits, image.grey, image.meta)


def read_back(data: bytes) -> tuple[tuple[int, ...], tuple[int, int], dict]:
    """(OpenCV's shape, Pillow's (w, h), Pillow's EXIF) of encoded bytes; both must read."""
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert cv is not None, "OpenCV cannot read the output"
    with PILImage.open(io.BytesIO(data)) as im:
        im.load()
        return cv.shape, im.size, dict(im.getexif())


def raw_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian EXIF block whose IFD0 holds `entries` (tag, type, count, payload),
    written byte by byte so that it can be malformed."""
    n = len(entries)
    data_at = 8 + 2 + 12 * n + 4
    table, blobs = b"", b""
    for tag, typ, count, payload in entries:
        if len(payload) <= 4:
            table += struct.pack("<HHI", tag, typ, count) + payload.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, typ, count, data_at + len(blobs))
            blobs += payload + b"\0" * (len(payload) % 2)
    return b"II*\0" + struct.pack("<IH", 8, n) + table + b"\0\0\0\0" + blobs


def jpeg_with_exif(exif: bytes, pixels: np.ndarray | None = None) -> bytes:
    data = cv2.imencode(".jpg", rgb8() if pixels is None else pixels)[1].tobytes()
    payload = b"Exif\0\0" + exif
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


# ------------------------------------------------------------------ 1. TIFF layout tags


def tiff_input(pages: int) -> bytes:
    exif = PILImage.Exif()
    exif[MAKE] = "TiffCam"
    frames = [PILImage.fromarray(rgb8(40, 48, seed=i)) for i in range(pages)]
    return pil_bytes(frames, "TIFF", exif=exif)


@pytest.mark.parametrize("pages", [1, 2])
@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_tiff_input_gives_readable_outputs_of_the_right_size(ext, pages):
    notes: list[str] = []
    image = decode(tiff_input(pages), "in.tif", on_warning=notes.append)
    assert image.size == (40, 48)
    data = encode(doubled(image), ext, name=f"out{ext}", on_warning=notes.append)
    cv_shape, pil_size, exif = read_back(data)
    assert cv_shape[:2] == (80, 96) and pil_size == (96, 80)
    # The input's layout tags stay behind; its descriptive ones travel.
    for layout in (256, 257, 258, 259, 273, 277, 278, 279):
        assert layout not in exif or ext in (".tif", ".tiff"), (ext, layout)
    if ext in (".tif", ".tiff"):
        assert exif[256] == 96 and exif[257] == 80
    if ext not in (".bmp",):
        assert exif.get(MAKE) == "TiffCam"
    assert (pages > 1) == any("2 pages; only the first is upscaled" in n for n in notes)


# ------------------------------------------------------------------ 7. decompression bombs


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_tiff_orientation_tag_is_applied_once(orientation, mode):
    """OpenCV 5's TIFF reader turns the image upright itself; it was then turned a second
    time (a tag-6 TIFF came out rotated twice, or black at its top)."""
    stored = rgb8(6, 10) if mode == "RGB" else rgb8(6, 10)[..., 0]
    pil = PILImage.fromarray(stored)
    if mode == "I;16":
        pil = PILImage.fromarray(stored.astype(np.uint16) * 257).convert("I;16")
    data = pil_bytes([pil], "TIFF", tiffinfo={0x0112: orientation})
    with PILImage.open(io.BytesIO(data)) as im:
        upright = np.asarray(ImageOps.exif_transpose(im)).astype(np.float64)
    image = decode(data, "t.tif")
    assert image.rgb.shape[:2] == upright.shape[:2]
    got = image.rgb if mode == "RGB" else image.rgb[..., 0]
    maxval = 65535.0 if mode == "I;16" else 255.0
    np.testing.assert_array_equal(np.rint(got * maxval), upright)


def bomb_bmp() -> bytes:  # 1,080 bytes, RLE8, 30000 x 30000
    palette = b"\0" * 1024
    data, at = b"\x00\x01", 14 + 40 + 1024
    info = struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 8, 1, 2, 2835, 2835, 256, 0)
    return struct.pack("<2sIHHI", b"BM", at + 2, 0, 0, at) + info + palette + data


def bomb_jpeg() -> bytes:  # 631 bytes announcing 12000 x 12000
    small = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    i = small.index(b"\xff\xc0")
    return small[: i + 5] + struct.pack(">HH", 12000, 12000) + small[i + 9 :]


def bomb_png(side: int = 20000) -> bytes:  # zeros, deflated about 1000:1
    z = zlib.compressobj(9)
    body = b"".join(z.compress(b"\0" * (side + 1)) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def bomb_webp() -> bytes:  # VP8L header of 16383 x 16383
    body = b"\x2f" + struct.pack("<I", 16382 | 16382 << 14) + b"\0" * 32
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bomb_tiff() -> bytes:  # an LZW TIFF whose IFD says 20000 x 20000
    data = bytearray(pil_bytes([PILImage.new("RGB", (8, 8))], "TIFF", compression="tiff_lzw"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] in (256, 257):
            struct.pack_into("<HI", data, entry + 2, 4, 1)
            struct.pack_into("<I", data, entry + 8, 20000)
    return bytes(data)


BOMBS = {"bmp": bomb_bmp, "jpeg": bomb_jpeg, "webp": bomb_webp, "tiff": bomb_tiff}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_bombs_are_refused_from_the_header(kind, tmp_path):
    data = BOMBS[kind]()
    with pytest.raises(
        GsasrError,
        match=r"^bomb: \d+x\d+ is \d+ megapixels, over the input limit of 134 megapixels$",
    ):
        decode(data, "bomb")
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(data)
    info = probe_image(path, max_pixels=None)  # a dry run sizes it without decoding
    assert info.pixels > MAX_INPUT_PIXELS and info.format == kind.upper()
    with pytest.raises(GsasrError, match="over the input limit"):
        probe_image(path)


def size_tiff(side: int, size_type: int = 4, then: int | None = None) -> bytes:
    """A deflated grey TIFF of side x side zeros whose IFD0 gives ImageWidth and
    ImageLength as `size_type` (LONG), and with `then`, a second time as that (a LONG).
    libtiff decodes by the first."""
    z = zlib.compressobj(9)
    data = b"".join(z.compress(bytes(side)) for _ in range(side)) + z.flush()

    def e(tag: int, typ: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, typ, 1, value)

    sizes = [e(256, size_type, side), e(257, size_type, side)]
    if then is not None:
        sizes = [sizes[0], e(256, 4, then), sizes[1], e(257, 4, then)]
    n = len(sizes) + 7
    at = 8 + 2 + 12 * n + 4
    entries = [*sizes, e(258, 3, 8), e(259, 3, 8), e(262, 3, 1), e(273, 4, at), e(277, 3, 1)]
    entries += [e(278, 4, side), e(279, 4, len(data))]
    return b"II*\0" + struct.pack("<IH", 8, n) + b"".join(entries) + bytes(4) + data


@pytest.mark.parametrize("first_type", [4, 9])  # LONG; SLONG, which was not read at all
def test_a_tiff_that_gives_its_size_twice_is_refused_before_decoding(first_type):
    """The header reader kept the last ImageWidth/ImageLength (16x16) while libtiff
    decodes by the first: a 389 KB file claiming 16x16 was decoded at 20000x20000
    (1 GB) before the check after decoding refused it."""
    with pytest.raises(GsasrError, match=r"^t\.tif: .*tag 256 given twice"):
        decode(size_tiff(3000, first_type, then=16), "t.tif")


@pytest.mark.parametrize("size_type", [3, 4, 8, 9])
def test_a_tiff_size_in_any_integer_type_is_read(size_type):
    """libtiff takes SSHORT and SLONG sizes too; the header reader said 'no ImageWidth'."""
    assert decode(size_tiff(40, size_type), "t.tif").size == (40, 40)


def test_bombs_cost_no_memory(tmp_path):
    """In a fresh process: refusing every bomb, a 20000^2 PNG of zeros included, keeps
    the peak RSS near the interpreter's own (it was 4-5 GB)."""
    paths = []
    for kind, make in {**BOMBS, "png": bomb_png}.items():
        paths.append(tmp_path / f"bomb.{kind}")
        paths[-1].write_bytes(make())
    script = textwrap.dedent(
        """
        import resource, sys
        from pathlib import Path
        from gsasr_cli.errors import GsasrError
        from gsasr_cli.imageio import read_image, probe_image
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for p in sys.argv[1:]:
            probe_image(Path(p), max_pixels=None)
            try:
                read_image(Path(p))
            except GsasrError as exc:
                assert "input limit" in str(exc), exc
            else:
                raise SystemExit(p + " was decoded")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 100_000  # KiB of growth


def test_the_pixel_limit_is_a_parameter():
    data = cv2.imencode(".png", rgb8(100, 100))[1].tobytes()
    with pytest.raises(
        GsasrError, match="100x100 is 10000 pixels, over the input limit of 5000 pixels"
    ):
        decode(data, "x.png", max_pixels=5000)
    assert decode(data, "x.png", max_pixels=None).size == (100, 100)


def test_metadata_of_an_image_beyond_pillows_own_limit_is_read():
    """Pillow refuses to open more than 179 MP and the metadata was silently lost: with
    a raised limit, EXIF orientation still turns the reported size upright."""
    exif = PILImage.Exif()
    exif[0x0112] = 6
    small = PILImage.new("RGB", (16, 8))
    data = bytearray(pil_bytes([small], "JPEG", exif=exif.tobytes()))
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, 12000, 16000)  # height, width: 192 MP
    info = probe_bytes(bytes(data), "big.jpg", max_pixels=None, on_warning=lambda m: None)
    assert (info.width, info.height) == (12000, 16000) and info.meta.orientation == 6


@pytest.mark.parametrize(
    "make",
    [
        lambda: cv2.imencode(".png", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".png", rgb8().astype(np.uint16) * 257)[1].tobytes(),
        lambda: cv2.imencode(".jpg", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".webp", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".webp", rgb8(), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
        lambda: cv2.imencode(".tif", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".bmp", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".ppm", rgb8())[1].tobytes(),
        lambda: cv2.imencode(".pgm", rgb8()[..., 0])[1].tobytes(),
        lambda: pil_bytes([PILImage.fromarray(rgb8())], "GIF"),
        lambda: pil_bytes([PILImage.fromarray(rgb8()).convert("LA")], "PNG"),
        lambda: pil_bytes([PILImage.fromarray(rgb8()).convert("RGBA")], "WEBP", lossless=True),
        lambda: jpeg_with_exif(raw_exif([(0x0112, 3, 1, struct.pack("<H", 8))])),
    ],
)
def test_probe_agrees_with_decode(make, tmp_path):
    data = make()
    path = tmp_path / "x"
    path.write_bytes(data)
    info = probe_image(path)
    image = decode(data, "x")
    assert (info.height, info.width) == image.size
    assert info.grey == image.grey and info.bits == image.bits


# ------------------------------------------------------------------ 8. unbounded reads


def test_devices_folders_and_sockets_are_refused(tmp_path):
    with pytest.raises(GsasrError, match=r"^/dev/zero: not a regular file \(a character device\)"):
        read_image(Path("/dev/zero"))
    with pytest.raises(GsasrError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(GsasrError, match="no such file"):
        read_image(tmp_path / "missing.png")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(GsasrError, match=r"not a regular file \(a socket\)"):
            read_image(sock_path)


def test_a_file_over_the_byte_limit_is_refused_unread(tmp_path):
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(3 << 30)  # sparse: nothing is written, nothing may be read
    with pytest.raises(GsasrError, match=r"3 GiB is over the 1 GiB input limit"):
        read_image(big)
    with pytest.raises(GsasrError, match="input limit"):
        probe_image(big)


def test_endless_streams_stop_at_the_limit():
    class Zeros(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = bytes(len(b))
            return len(b)

    with pytest.raises(GsasrError, match=r"^<stdin>: longer than the 1 MiB input limit"):
        read_stdin(io.BufferedReader(Zeros()), max_bytes=1 << 20)
    assert read_stdin(io.BytesIO(b"abc"), max_bytes=3) == b"abc"


def test_stdin_closed_or_a_terminal_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(GsasrError, match="standard input is closed"):
        read_stdin()

    class Tty(io.BytesIO):
        def isatty(self):
            return True

    with pytest.raises(GsasrError, match="is a terminal"):
        read_stdin(Tty(b"x"))


def test_a_named_pipe_is_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = cv2.imencode(".png", rgb8())[1].tobytes()

    def feed():
        with open(fifo, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert read_image(fifo).size == (20, 24)
    finally:
        writer.join(5)


# ------------------------------------------------------------------ 10. format limits


@pytest.mark.parametrize(
    "ext,h,w,ok",
    [
        (".webp", 16383, 16383, True),
        (".webp", 10, 16384, False),
        (".jpg", 65500, 10, True),
        (".jpeg", 65501, 10, False),
        (".png", 10, 1_000_000, True),
        (".png", 10, 1_000_001, False),
        (".tif", 32768, 32768, True),  # 3 GiB of 8-bit RGB
        (".tiff", 32768, 32769, False),
        (".bmp", 20000, 30000, True),
        (".bmp", 30000, 30000, False),
    ],
)
def test_output_sizes_are_checked_against_each_format(ext, h, w, ok):
    if ok:
        check_output_size(ext, h, w, name="out")
    else:
        with pytest.raises(GsasrError, match=r"^out: \d+x\d+ (is larger than|needs)"):
            check_output_size(ext, h, w, name="out")


def test_sixteen_bit_alpha_counts_in_the_tiff_limit():
    check_output_size(".tif", 21000, 21000, channels=3, bits=8)
    with pytest.raises(GsasrError, match="more than a TIFF file holds"):
        check_output_size(".tif", 21000, 21000, channels=4, bits=16)


def test_encoding_past_a_format_limit_is_one_line_and_silent(capfd):
    wide = Image(np.zeros((1, 16384, 3), np.float32), None, 8, False)
    with pytest.raises(GsasrError, match=r"^big.webp: 16384x1 is larger than WebP allows"):
        encode(wide, ".webp", name="big.webp")
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------ 11/16. the writer


def test_a_long_output_name_fits(tmp_path):
    target = tmp_path / ("n" * 251 + ".png")  # 255 bytes: the most a name may have
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == [target.name]


@pytest.mark.parametrize(
    "where,reason",
    [
        ("file/out.png", "a folder in its path is a file"),
        ("missing/out.png", "its folder does not exist"),
        ("n" * 256 + ".png", "name too long"),
        ("folder", "is a folder"),
    ],
)
def test_write_errors_are_one_line(tmp_path, where, reason):
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    with pytest.raises(GsasrError, match=f"cannot write \\({reason}") as err:
        write_atomic(tmp_path / where, b"data")
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(GsasrError, match="cannot write \\(permission denied\\)"):
        write_atomic(ro / "x.png", b"data")


def test_name_checks_before_any_work(tmp_path):
    check_name(tmp_path / ("n" * 255))
    with pytest.raises(GsasrError, match=r"name too long: 256 bytes, at most 255"):
        check_name(tmp_path / "new" / ("n" * 256))
    with pytest.raises(GsasrError, match="path too long"):
        check_name(tmp_path / "/".join(["d" * 200] * 25))


def test_without_overwrite_one_writer_wins(tmp_path):
    target = tmp_path / "out.png"
    wins, losses = [], []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            write_atomic(target, f"writer {i}".encode() * 1000, overwrite=False)
            wins.append(i)
        except OutputExists:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert target.read_bytes() == f"writer {wins[0]}".encode() * 1000
    assert os.listdir(tmp_path) == ["out.png"]
    write_atomic(target, b"new")  # overwrite is the default
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_writing_leaves_no_temporary_file(tmp_path, signum):
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from gsasr_cli.imageio import Terminated, terminate_on_signals, write_atomic
        real_fsync = os.fsync
        def fsync_then_signal(fd):  # the signal arrives with the data half on disk
            real_fsync(fd)
            os.kill(os.getpid(), {int(signum)})
        os.fsync = fsync_then_signal
        try:
            with terminate_on_signals():
                write_atomic(Path(sys.argv[1]), bytes(50_000_000))
        except Terminated as exc:
            sys.exit(128 + exc.signum)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.png")], capture_output=True, text=True
    )
    assert out.returncode == 128 + signum, out.stderr
    assert os.listdir(tmp_path) == []


def test_nohup_keeps_a_hangup_ignored(tmp_path):
    """`nohup gsasr ...`: a run started with SIGHUP ignored finishes when the terminal
    hangs up mid-write (it used to stop with "terminated by SIGHUP")."""
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.full((6, 5, 3), 90, np.uint8))
    script = textwrap.dedent(
        """
        import os, signal, sys
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        real_fsync = os.fsync
        def fsync_then_hangup(fd):  # the hangup arrives with the output half written
            real_fsync(fd)
            os.kill(os.getpid(), signal.SIGHUP)
        os.fsync = fsync_then_hangup
        from gsasr_cli.cli import main
        main(sys.argv[1:])
        """
    )
    args = ["upscale", str(src), "--scale", "2", "-o", str(tmp_path / "out.png"), "--device", "cpu"]
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "terminated" not in out.stderr
    assert cv2.imread(str(tmp_path / "out.png")).shape == (12, 10, 3)
    assert sorted(os.listdir(tmp_path)) == ["in.png", "out.png"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_second_signal_ends_a_stuck_clean_up(signum):
    """The first signal unwinds; if the unwinding blocks (a progress line to a terminal
    that nobody reads), a second one ends the process at once, by the signal."""
    script = textwrap.dedent(
        f"""
        import os, threading
        from gsasr_cli.imageio import Terminated, terminate_on_signals
        with terminate_on_signals():
            try:
                os.kill(os.getpid(), {int(signum)})
            except Terminated:
                print("stuck", flush=True)
                threading.Event().wait(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "stuck\n"
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == -signum


# ------------------------------------------------------------------ 12. malformed EXIF


MALFORMED = [
    (0x011A, 2, 4, b"abc\0"),  # XResolution as text
    (0x0128, 2, 4, b"abc\0"),  # ResolutionUnit as text
    (0x0213, 5, 1, struct.pack("<II", 1, 1)),  # YCbCrPositioning as a fraction
    (0x8825, 2, 4, b"abc\0"),  # a GPS pointer that points nowhere
    (MAKE, 2, 8, b"GoodCam\0"),
]


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_malformed_exif_is_dropped_with_a_warning_never_failing(ext):
    notes: list[str] = []
    image = decode(jpeg_with_exif(raw_exif(MALFORMED)), "in.jpg", on_warning=notes.append)
    assert any(n.startswith("in.jpg: ") and "malformed" in n for n in notes), notes
    data = encode(doubled(image), ext, name=f"out{ext}", on_warning=notes.append)
    cv_shape, _, exif = read_back(data)
    assert cv_shape[:2] == (40, 48)
    if ext != ".bmp":
        assert exif.get(MAKE) == "GoodCam"


def test_exif_libtiff_cannot_take_does_not_fail_a_tiff(capfd):
    """The report's case: tags of the wrong count (ReferenceBlackWhite, PrimaryChromaticities
    with 2 values) made libtiff raise "Tag value does not match libtiff field definition"."""
    pairs = struct.pack("<HH", 1, 2)
    entries = [(MAKE, 2, 8, b"GoodCam\0"), (532, 3, 2, pairs), (319, 3, 2, pairs)]
    image = decode(jpeg_with_exif(raw_exif(entries)), "in.jpg")
    _, size, tags = read_back(encode(doubled(image), ".tif", name="out.tif"))
    assert size == (48, 40) and tags.get(MAKE) == "GoodCam"
    # A value libtiff skips is reported in a line naming the output, not on stderr.
    notes: list[str] = []
    image = decode(jpeg_with_exif(raw_exif([(0x0128, 3, 1, struct.pack("<H", 5))])), "in.jpg")
    encode(doubled(image), ".tif", name="out.tif", on_warning=notes.append)
    assert notes == [
        'out.tif: EXIF ResolutionUnit not copied (Bad value 5 for "ResolutionUnit" tag.)'
    ], notes
    assert capfd.readouterr().err == ""


def test_tags_libtiff_refuses_are_dropped_step_by_step(monkeypatch):
    """Whatever libtiff rejects goes, in steps, with a warning: first the tags not known
    to be safe, then all EXIF; the picture is always written."""
    save = PILImage.Image.save

    def strict_save(self, fp, format=None, **options):  # a libtiff that dislikes XPTitle
        if format == "TIFF" and 0x9C9B in options.get("exif", {}):
            raise ValueError("Tag value does not match libtiff field definition")
        return save(self, fp, format, **options)

    monkeypatch.setattr(PILImage.Image, "save", strict_save)
    exif = PILImage.Exif()
    exif[MAKE], exif[0x9C9B] = "GoodCam", tuple("title\0".encode("utf-16-le"))
    image = decode(jpeg_with_exif(exif.tobytes()[6:]), "in.jpg")
    notes: list[str] = []
    _, size, tags = read_back(encode(doubled(image), ".tif", name="o.tif", on_warning=notes.append))
    assert size == (48, 40) and tags.get(MAKE) == "GoodCam" and 0x9C9B not in tags
    assert notes == [
        "o.tif: EXIF XPTitle not copied (Tag value does not match libtiff field definition)"
    ]


def test_gps_survives_where_the_format_can_hold_it():
    exif = PILImage.Exif()
    exif[MAKE] = "GpsCam"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}
    image = decode(jpeg_with_exif(exif.tobytes()[6:]), "in.jpg")
    with PILImage.open(io.BytesIO(encode(doubled(image), ".jpg"))) as out:
        assert out.getexif().get_ifd(0x8825)[1] == "N"
    _, _, tiff_tags = read_back(encode(doubled(image), ".tif"))
    assert tiff_tags[MAKE] == "GpsCam"


# ------------------------------------------------------------------ 19. codec noise


def test_codec_complaints_become_one_line_naming_the_file(capfd):
    clean = cv2.imencode(".jpg", rgb8(64, 64))[1].tobytes()
    noisy = clean[:300] + b"\xff\x00" * 5 + clean[300:]  # "Corrupt JPEG data: ..."
    notes: list[str] = []
    assert decode(noisy, "noisy.jpg", on_warning=notes.append).size == (64, 64)
    assert len(notes) == 1 and notes[0].startswith("noisy.jpg: Corrupt JPEG data")

    png = bytearray(cv2.imencode(".png", rgb8(64, 64))[1].tobytes())
    png[41] ^= 0xFF  # inside IDAT: libpng error
    with pytest.raises(GsasrError, match=r"^bad.png: not a readable image \(.*libpng") as err:
        decode(bytes(png), "bad.png")
    assert "\n" not in str(err.value)

    tif = cv2.imencode(".tif", rgb8())[1].tobytes()
    with pytest.raises(GsasrError, match=r"^cut.tif: not a readable image"):
        decode(tif[:100], "cut.tif")
    assert capfd.readouterr().err == ""


def test_warnings_without_a_callback_are_python_warnings():
    frames = [PILImage.fromarray(rgb8(seed=i)) for i in range(3)]
    with pytest.warns(GsasrWarning, match=r"^a.gif: animated, 3 frames; only the first") as w:
        decode(pil_bytes(frames, "GIF"), "a.gif")
    assert w[0].filename == __file__  # the caller's line, not one inside gsasr_cli


def test_api_warnings_point_at_the_callers_line(tmp_path):
    """upscale(path) warned from a gsasr_cli source line, whatever the call depth."""
    from gsasr_cli import upscale

    path = tmp_path / "a.gif"
    path.write_bytes(pil_bytes([PILImage.fromarray(rgb8(seed=i)) for i in range(2)], "GIF"))
    with pytest.warns(GsasrWarning, match="only the first") as w:
        upscale(str(path), scale=1)
    assert w[0].filename == __file__


def test_nan_is_written_as_black_without_numpy_warnings():
    rgb = np.full((2, 3, 3), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = encode(Image(rgb, None, 8, False), ".png")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).max() == 0


# ------------------------------------------------------------------ 22. frames, alpha


@pytest.mark.parametrize(
    "fmt,options,note",
    [
        ("GIF", {}, "animated, 3 frames"),
        ("PNG", {}, "animated, 3 frames"),
        ("WEBP", {"lossless": True}, "animated, 3 frames"),
        ("TIFF", {}, "3 pages"),
    ],
)
def test_multi_frame_inputs_are_announced(fmt, options, note):
    frames = [PILImage.fromarray(rgb8(seed=i)) for i in range(3)]
    notes: list[str] = []
    image = decode(pil_bytes(frames, fmt, **options), "in", on_warning=notes.append)
    assert image.size == (20, 24)
    assert notes == [f"in: {note}; only the first is upscaled"]


@pytest.mark.parametrize("frames", [1, 2])
def test_an_apng_still_image_apart_from_its_frames_is_the_one_upscaled(frames):
    """OpenCV's imdecode gave the first animation frame of an APNG whose still image (IDAT)
    is not a frame, though imread, libpng, Pillow and every still viewer show the still.
    With the still image as frame 1 nothing changes."""
    still, *animation = [PILImage.new("RGB", (6, 4), c) for c in ("red", "lime", "blue")]
    data = pil_bytes([still, *animation[:frames]], "PNG", default_image=True)
    notes: list[str] = []
    image = decode(data, "a.png", on_warning=notes.append)
    np.testing.assert_array_equal(image.rgb[0, 0], [1, 0, 0])
    count = "1 frame" if frames == 1 else "2 frames"
    assert notes == [f"a.png: animated, {count}; its still image (not a frame) is upscaled"]
    first = decode(pil_bytes([still, *animation], "PNG"), "b.png", on_warning=notes.append)
    np.testing.assert_array_equal(first.rgb[0, 0], [1, 0, 0])
    assert notes[-1] == "b.png: animated, 3 frames; only the first is upscaled"


def test_opaque_stays_opaque_and_transparency_stays():
    frames = [PILImage.fromarray(rgb8(seed=i)) for i in range(2)]
    opaque_gif = pil_bytes(frames, "GIF")  # OpenCV decodes it as BGRA, all opaque
    assert decode(opaque_gif, "o.gif", on_warning=lambda m: None).alpha is None
    clear_gif = pil_bytes([PILImage.fromarray(rgb8()).convert("P")], "GIF", transparency=0)
    assert decode(clear_gif, "t.gif").alpha is not None
    # A 32-bit BMP's fourth byte is padding, usually zero: not a transparent image.
    px = np.zeros((2, 4, 4), np.uint8)
    px[..., 2] = 255
    at = 54
    bmp = struct.pack("<2sIHHI", b"BM", at + px.nbytes, 0, 0, at)
    bmp += struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, 32, 0, px.nbytes, 2835, 2835, 0, 0)
    image = decode(bmp + px.tobytes(), "x.bmp")
    assert image.alpha is None and np.allclose(image.rgb[0, 0], [1, 0, 0])
    # A PNG that stores alpha keeps it, even when it is opaque everywhere.
    rgba = np.dstack([rgb8(), np.full((20, 24), 255, np.uint8)])
    assert decode(cv2.imencode(".png", rgba)[1].tobytes(), "a.png").alpha is not None


# ------------------------------------------------------------------ 23. flattening


def half_transparent_red() -> Image:
    """Red, 16 pixels wide each: opaque, half transparent, transparent."""
    rgb = np.zeros((16, 48, 3), np.float32)
    rgb[..., 0] = 1
    alpha = np.repeat(np.array([1, 0.5, 0], np.float32), 16)[None].repeat(16, 0)
    return Image(rgb, alpha, 8, False)


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_transparency_is_flattened_onto_the_background_and_said(ext):
    notes: list[str] = []
    data = encode(half_transparent_red(), ext, quality=100, name=f"o{ext}", on_warning=notes.append)
    px = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[8, 8::16, ::-1]
    assert np.abs(px.astype(int) - [[255, 0, 0], [255, 128, 128], [255, 255, 255]]).max() <= 3
    fmt = {".jpg": "JPEG", ".bmp": "BMP"}[ext]
    assert notes == [f"o{ext}: transparency flattened onto white ({fmt} has no alpha)"]
    data = encode(
        half_transparent_red(), ext, quality=100, background=(0, 0, 0), on_warning=notes.append
    )
    px = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[8, 8::16, ::-1]
    assert np.abs(px.astype(int) - [[255, 0, 0], [128, 0, 0], [0, 0, 0]]).max() <= 3
    assert "onto black" in notes[-1]


def test_opaque_alpha_flattens_silently():
    image = half_transparent_red()
    image.alpha[:] = 1
    notes: list[str] = []
    encode(image, ".jpg", on_warning=notes.append)
    assert notes == []


def test_colours_and_formats():
    assert parse_color("white") == (255, 255, 255) and parse_color("#000") == (0, 0, 0)
    assert parse_color("#ff8000") == (255, 128, 0) and parse_color("10, 20,30") == (10, 20, 30)
    for bad in ("blue-ish", "#12345", "1,2", "300,0,0"):
        with pytest.raises(ValueError):
            parse_color(bad)
    assert same_format(".jpg", "jpeg") and same_format(".TIF", ".tiff")
    assert not same_format(".png", ".jpg") and not same_format(".gif", ".gif")


# ------------------------------------------------------------------ one writer for all


def test_weights_and_checkpoints_use_the_one_writer(tmp_path, monkeypatch):
    import torch

    from gsasr_cli import checkpoint, files, weights_io
    from gsasr_cli.model import GSASR, ModelConfig

    written: list[Path] = []
    real = files.write_atomic

    def spy(path, data, **kw):
        written.append(Path(path))
        real(path, data, **kw)

    monkeypatch.setattr(weights_io, "write_atomic", spy)
    monkeypatch.setattr(checkpoint, "write_atomic", spy)
    model = GSASR(ModelConfig(n_feats=8, n_resblocks=1, decoder_blocks=1))
    weights_io.save_weights(model, tmp_path / "w.safetensors", dtype=torch.float32)
    state = checkpoint.model_state(model)
    ema = {k: v.clone() for k, v in state.items()}
    ckpt = checkpoint.Checkpoint(state, ema, None, 0, model.cfg, {}, 3, 1.0)
    checkpoint.save_checkpoint(ckpt, tmp_path / "c.pt")
    assert written == [tmp_path / "w.safetensors", tmp_path / "c.pt"]
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "w.safetensors"]
    loaded = weights_io.load_model(tmp_path / "w.safetensors")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters(), strict=True)
    )
    assert checkpoint.load_checkpoint(tmp_path / "c.pt").step == 3
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(GsasrError, match=r"w.safetensors: cannot create folder .*file \(a folder"):
        weights_io.save_weights(model, tmp_path / "file" / "w.safetensors")


def test_stderr_capture_keeps_progress_output_and_a_closed_stderr(capfd):
    from gsasr_cli.files import capture_stderr

    notes: list[str] = []
    with capture_stderr(notes):
        os.write(2, b"libpng warning: iCCP: something\n\r\x1b[2K 40% tiles\n")
    assert notes == ["libpng warning: iCCP: something"]
    assert capfd.readouterr().err == "\r\x1b[2K 40% tiles\n"  # drawn by another thread
    script = textwrap.dedent(
        """
        import os, sys
        import numpy as np, cv2
        from gsasr_cli.imageio import decode
        data = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
        os.close(2)  # as with `2>&-`
        notes = []
        decode(data[:300] + b"\\xff\\x00" * 5 + data[300:], "x.jpg", on_warning=notes.append)
        try:
            os.fstat(2)
        except OSError:
            print(notes[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.startswith("x.jpg: Corrupt JPEG data"), out


def test_threads_decoding_at_once_keep_stderr_and_their_own_notes(capfd):
    clean = cv2.imencode(".jpg", rgb8(64, 64))[1].tobytes()
    noisy = clean[:300] + b"\xff\x00" * 5 + clean[300:]
    notes: dict[int, list[str]] = {i: [] for i in range(8)}

    def work(i: int) -> None:
        for _ in range(20):
            decode(noisy if i % 2 else clean, f"{i}.jpg", on_warning=notes[i].append)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in notes.items():
        assert len(got) == (20 if i % 2 else 0) and all(n.startswith(f"{i}.jpg: ") for n in got)
    os.write(2, b"still stderr\n")
    assert capfd.readouterr().err == "still stderr\n"


def _exif_seed() -> bytes:
    exif = PILImage.Exif()
    exif[MAKE], exif[0x0110], exif[0x0132] = "Cam", "Model 1", "2024:01:02 03:04:05"
    exif[0x011A], exif[0x0128], exif[0x0112] = 72.0, 2, 1
    exif[0x8769] = {0xA002: 8, 0xA003: 6, 0x9003: "2024:01:02 03:04:05"}
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}
    return exif.tobytes()[6:]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_exif_never_fails_a_file(flips):
    exif = bytearray(_exif_seed())
    for pos, value in flips:
        exif[pos % len(exif)] = value
    pixels = rgb8(6, 8)
    try:
        image = decode(jpeg_with_exif(bytes(exif), pixels), "in.jpg", on_warning=lambda m: None)
    except GsasrError as exc:
        assert str(exc).startswith("in.jpg: ") and "\n" not in str(exc)
        return
    for ext in (".tif", ".png", ".jpg", ".webp"):
        notes: list[str] = []
        data = encode(image, ext, name=f"out{ext}", on_warning=notes.append)
        assert read_back(data)[1] == (8, 6)
        assert all(n.startswith(f"out{ext}: ") and "\n" not in n for n in notes)


def test_a_side_longer_than_the_decoder_takes_is_refused_from_the_header():
    png = bytearray(cv2.imencode(".png", rgb8(1, 8))[1].tobytes())
    struct.pack_into(">I", png, 16, 2_000_000)  # 2,000,000 x 1: 2 MP, but too wide
    with pytest.raises(GsasrError, match=r"^x.png: 2000000x1 is longer than the decoder allows"):
        decode(bytes(png), "x.png")


def test_format_limits_count_what_encode_writes():
    # 26000^2 grey: 645 MiB as grey, 2.5 GiB as BGRA (grey + alpha), 5 GiB at 16 bits.
    check_output_size(".tif", 26000, 26000, channels=1, bits=16)
    check_output_size(".tif", 26000, 26000, channels=2, bits=8)
    with pytest.raises(GsasrError, match="needs 5.04 GiB, more than a TIFF file holds"):
        check_output_size(".tif", 26000, 26000, channels=2, bits=16)
    check_output_size(".bmp", 40000, 40000, channels=2)  # flattened to grey: 1.5 GiB
    with pytest.raises(GsasrError, match="more than a BMP file holds"):
        check_output_size(".bmp", 40000, 40000, channels=4)


def test_without_hard_links_the_name_is_still_claimed_exclusively(tmp_path, monkeypatch):
    import errno

    def no_links(src, dst):  # FAT, some network file systems
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out.png"
    write_atomic(target, b"first", overwrite=False)
    with pytest.raises(OutputExists):
        write_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.png"]
    real_replace = os.replace

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "other.png", b"data", overwrite=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert os.listdir(tmp_path) == ["out.png"]  # no empty placeholder, no temporary file


@pytest.mark.parametrize("where", ["eXIf after the pixels", "ImageMagick text chunk"])
def test_png_exif_anywhere_is_read_without_decoding(where):
    exif = PILImage.Exif()
    exif[0x0112], exif[MAKE] = 6, "PngCam"
    raw = exif.tobytes()[6:]
    png = cv2.imencode(".png", rgb8(20, 24))[1].tobytes()
    if where.startswith("eXIf"):
        chunk_kind, body = b"eXIf", raw
    else:
        text = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n".encode()
        chunk_kind, body = b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(text)
    crc = zlib.crc32(chunk_kind + body) & 0xFFFFFFFF
    chunk = struct.pack(">I", len(body)) + chunk_kind + body + struct.pack(">I", crc)
    png = png[:-12] + chunk + png[-12:]  # before IEND
    info = probe_bytes(png, "x.png")
    assert (info.width, info.height) == (20, 24) and info.meta.orientation == 6
    image = decode(png, "x.png")
    assert image.size == (24, 20)
    with PILImage.open(io.BytesIO(encode(image, ".jpg"))) as out:
        assert out.getexif()[MAKE] == "PngCam"


def test_malformed_gps_tags_are_named_as_gps_tags():
    # IFD0: Make and a GPS pointer to offset 38; GPS IFD: GPSLatitude (RATIONAL) as text.
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHI4s", MAKE, 2, 4, b"Cam\0")
    ifd0 += struct.pack("<HHII", 0x8825, 4, 1, 38) + b"\0\0\0\0"
    gps = struct.pack("<H", 1) + struct.pack("<HHI4s", 2, 2, 4, b"abc\0") + b"\0\0\0\0"
    exif = b"II*\0" + struct.pack("<I", 8) + ifd0 + gps
    assert len(b"II*\0" + struct.pack("<I", 8) + ifd0) == 38
    notes: list[str] = []
    image = decode(jpeg_with_exif(exif), "in.jpg", on_warning=notes.append)
    assert notes == ["in.jpg: GPSLatitude malformed in the EXIF, not copied"], notes
    with PILImage.open(io.BytesIO(encode(image, ".jpg"))) as out:
        assert out.getexif()[MAKE] == "Cam"
