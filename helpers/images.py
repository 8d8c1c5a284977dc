"""Turn anything a user has into the RGB PIL image the BLIP-2 processors expect.

Notebook users hand over file paths, URLs, raw bytes or PIL images in whatever mode the file came in:
palette GIFs, transparent PNGs, 16-bit greyscale scans, CMYK JPEGs, phone photos stored sideways with an
EXIF rotation tag. The processors quietly assume an upright, 8-bit, three-channel image, and anything else
gives wrong captions rather than errors. This module does that one job up front: it refuses downloads and
decompression bombs that would exhaust a Colab VM before decoding them, converts every mode correctly, and
fails with an `ImageLoadError` that names the source and says what to do.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

_ACCEPTED = "a file path (str or os.PathLike), an http(s) or file URL, bytes, or a PIL.Image.Image"
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
MAX_PIXELS = 64_000_000
"""The decompression-bomb guard: images are refused above this many pixels, in manifests and training alike."""
_CHUNK_BYTES = 64 * 1024
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_UINT16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


class ImageLoadError(ValueError):
    """A source could not be turned into an RGB image; the message names the source and the fix."""


def load_image(
    source: ImageSource,
    *,
    timeout: float = 10.0,
    max_bytes: int = 25 * 2**20,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Open `source` and return a fully loaded, upright RGB image that owns its pixels.

    `timeout` bounds a whole download in seconds and `max_bytes` its size, so a slow or huge URL fails fast.
    `max_pixels` is checked against the header before any pixel is decoded, so a small file that claims
    to be enormous cannot fill memory. A PIL image passed in is copied, never modified.
    """
    if isinstance(source, Image.Image):
        return _decode(source, "<PIL image>", max_pixels)
    if isinstance(source, bytes):
        description = f"<bytes of length {len(source)}>"
        if not source:
            raise ImageLoadError(f"{description}: no data. Pass the full contents of an image file.")
        return _open_and_decode(io.BytesIO(source), description, max_pixels)
    if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
        data = _download(source, timeout=timeout, max_bytes=max_bytes)
        return _open_and_decode(io.BytesIO(data), source, max_pixels)
    if isinstance(source, str | os.PathLike):
        path = _local_path(source)
        if not path.exists():
            raise ImageLoadError(
                f"{path}: image file not found (relative paths start from {Path.cwd()}). "
                "Check the spelling, or pass a URL, bytes or a PIL image instead."
            )
        if path.is_dir():
            raise ImageLoadError(
                f"{path}: is a directory, not an image file. Pass one file inside it, "
                f"e.g. load_images(sorted(Path({str(path)!r}).glob('*.jpg')))."
            )
        return _open_and_decode(path, str(path), max_pixels)
    raise TypeError(f"Cannot load an image from {type(source).__name__}; pass {_ACCEPTED}.")


def _local_path(source: str | os.PathLike) -> Path:
    """The file a path or `file://` URL names; any other URL scheme is refused, never read as a path."""
    text = os.fsdecode(source)
    scheme = _URL_SCHEME.match(text)
    if scheme is None:
        return Path(text).expanduser()
    parsed = urllib.parse.urlparse(text)
    if scheme.group(1).lower() != "file":
        raise ImageLoadError(
            f"{text}: {scheme.group(1)}:// URLs are not supported (only http://, https:// and file://). "
            "Download the file and pass its path."
        )
    if parsed.netloc not in ("", "localhost"):
        raise ImageLoadError(
            f"{text}: a file:// URL on another host ({parsed.netloc}) cannot be opened. "
            "Copy the file here and pass its path."
        )
    return Path(urllib.request.url2pathname(parsed.path))


def load_images(
    sources: ImageSource | Sequence[ImageSource],
    *,
    timeout: float = 10.0,
    max_bytes: int = 25 * 2**20,
    max_pixels: int = MAX_PIXELS,
) -> list[Image.Image]:
    """Load one source or a list/tuple of them, reporting every bad entry at once.

    A batch that fails on its first bad item makes users fix files one run at a time; collecting all
    failures into one `ImageLoadError` lets them fix the whole batch after one run.
    """
    if isinstance(sources, str | bytes | os.PathLike | Image.Image):
        items: Sequence[ImageSource] = [sources]
    elif isinstance(sources, list | tuple):
        items = sources
    else:
        raise TypeError(
            f"Cannot load images from {type(sources).__name__}; pass one source or a list of them."
        )
    if not items:
        raise ValueError("No images given: pass at least one path, URL, bytes object or PIL image.")

    if len(items) == 1:  # one source: its own one-line error, not a list of one
        return [load_image(items[0], timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels)]
    images: list[Image.Image] = []
    problems: list[str] = []
    for index, source in enumerate(items):
        try:
            images.append(load_image(source, timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels))
        except (ImageLoadError, TypeError) as exc:
            problems.append(f"  [{index}] {exc}")
    if problems:
        raise ImageLoadError(
            f"{len(problems)} of {len(items)} images could not be loaded; fix or remove these entries:\n"
            + "\n".join(problems)
        )
    return images


def sample_names() -> list[str]:
    """Names of the bundled sample photos, usable offline (see samples/SOURCES.md for their licences)."""
    return sorted(path.stem for path in SAMPLES_DIR.glob("*.jpg"))


def sample_path(name: str) -> Path:
    """Path of the bundled sample photo `name`, e.g. "cat"."""
    path = SAMPLES_DIR / f"{name}.jpg"
    if not path.is_file():
        raise ValueError(
            f"No sample image called {name!r}; available: {', '.join(sample_names()) or 'none'}."
        )
    return path


def sample_image(name: str) -> Image.Image:
    """The bundled sample photo `name` as an RGB image."""
    return load_image(sample_path(name))


def _download(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """Fetch `url` within `timeout` seconds in all, headers and body alike, and at most `max_bytes`.

    `urlopen(timeout=)` only bounds each socket read, so a server that drip-feeds its headers one byte at a
    time would never time out. The download runs in a worker thread instead; when the deadline passes, its
    sockets are shut down, which ends any read in progress at once, and the caller gets the timeout.
    """
    sockets: list[socket.socket] = []
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            outcome["data"] = _fetch(url, timeout, max_bytes, sockets)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name=f"download {url}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for sock in list(sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        worker.join(1.0)
        raise _download_failed(url, TimeoutError(f"download took longer than {timeout} s"))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["data"]  # type: ignore[return-value]


def _fetch(url: str, timeout: float, max_bytes: int, sockets: list[socket.socket]) -> bytes:
    """The download itself; every socket it opens is recorded in `sockets` so the deadline can close it."""
    too_big = (
        f"{url}: larger than the {max_bytes:,}-byte limit. Download it yourself and pass a smaller file, "
        "or raise max_bytes."
    )
    opener = urllib.request.build_opener(_TrackedHTTPHandler(sockets), _TrackedHTTPSHandler(sockets))
    request = urllib.request.Request(url, headers={"User-Agent": "blip2-kit"})
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise ImageLoadError(too_big)
            chunks: list[bytes] = []
            received = 0
            while chunk := response.read1(_CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    raise ImageLoadError(too_big)
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise ImageLoadError(
            f"{url}: the server answered HTTP {exc.code} {exc.reason}. Check the URL opens in a browser."
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _download_failed(url, exc) from exc
    return b"".join(chunks)


def _download_failed(url: str, exc: BaseException) -> ImageLoadError:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return ImageLoadError(
        f"{url}: download failed ({str(reason) or type(exc).__name__}). Check the URL and your "
        "connection, raise timeout, or download the file and pass its path."
    )


def _tracked(connection_class: type[http.client.HTTPConnection], sockets: list[socket.socket]):
    """A connection class that records its socket once connected, so another thread can shut it down."""

    class Tracked(connection_class):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            sockets.append(self.sock)

    return Tracked


class _TrackedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.connection_class = _tracked(http.client.HTTPConnection, sockets)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.connection_class, req)


class _TrackedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.connection_class = _tracked(http.client.HTTPSConnection, sockets)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self.connection_class, req, context=self._context)


def _open_and_decode(fp: io.BytesIO | Path, description: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) so the pixel guard runs before decoding, then decode and convert."""
    try:
        with warnings.catch_warnings():
            # max_pixels is the policy here; PIL's global bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                return _decode(img, description, max_pixels)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{description}: refused as a decompression bomb ({exc}).") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"{description}: not an image format PIL can read. "
            "Check that it is a JPEG, PNG, GIF, WebP, BMP or TIFF file."
        ) from exc
    except OSError as exc:
        raise ImageLoadError(
            f"{description}: could not be read ({exc}). Check that the file is readable."
        ) from exc


def _decode(img: Image.Image, description: str, max_pixels: int) -> Image.Image:
    """Check the size, decode, apply EXIF orientation and convert to RGB, always returning a new image."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{description}: {width}x{height} = {width * height:,} pixels exceeds max_pixels={max_pixels:,} "
            "(a guard against decompression bombs). Resize the image first, or raise max_pixels if you "
            "trust it."
        )
    try:
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(
            f"{description}: the image data is truncated, corrupt or of an unsupported kind ({exc}). "
            "Re-download or re-export the file."
        ) from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: transparency onto white, high bit depths rescaled, not clipped."""
    if img.mode in _UINT16_MODES or img.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float greyscale to 0..255 by the range the data is stored in.

    Unsigned 16-bit data (the I;16 modes, and mode I as 16-bit PNGs open in older Pillow) spans 0..65535,
    so divide by 257; floats in 0..1 are normalised intensities, so multiply by 255. Anything outside those
    ranges has no fixed scale, so it is stretched from its own minimum to maximum.
    """
    data = np.nan_to_num(values.astype(np.float64))
    low, high = float(data.min()), float(data.max())
    if values.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        scaled = data * 255.0
    elif values.dtype.kind in "iu" and low >= 0 and high <= 65535:
        scaled = data / 257.0
    elif high > low:
        scaled = (data - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(data)
    return np.rint(scaled).clip(0, 255).astype(np.uint8)
