"""Find the documents under an input folder and decode their pages to grayscale.

Only this module reads input files. ``find_documents`` walks the input in a stable,
sorted order; ``read_document`` reads one file's bytes (size checked first) and
``iter_pages`` decodes them lazily, one page at a time, so a 500-page PDF never sits
in memory whole. Every way a file can be bad raises ``DocumentError`` with a reason
from ``FailureReason``; the batch records it and goes on.

A page whose EXIF orientation tag (a phone's or a camera-scanner's JPEG, a TIFF) says it
is stored turned or mirrored is turned upright first, as image viewers show it: boxes
in the report are on the upright page. A page carries the resolution its file states
(a PDF page: the one it is rasterized at), which tells the segmenter a fine scan; a page
scanned at two resolutions (a fax) is stretched to square pixels first, and its boxes
are on the stretched page.

Decisions on degenerate pages: a page smaller than ``input.min_page_side`` on either
side (a 1×1 image) is ``too_small``. A uniform page (all white, all black) is *not* an
error here: it is a page with no fields, reported ``ok`` with an empty field list.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from pipeline.config import InputConfig
from pipeline.errors import DocumentError, FailureReason

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES
# PDF geometry is in points: 72 per inch.
POINTS_PER_INCH = 72.0
PDF_MAGIC = b"%PDF-"
# 16-bit samples map to 8 bits by this divisor (65535 / 255).
SIXTEEN_TO_EIGHT = 257.0
# The turn that sets a page upright, by its EXIF orientation tag (the EXIF standard's
# 2-8; 1 is upright): mirrored, upside down, mirrored and turned, turned a quarter.
EXIF_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ...of which these turn it a quarter, so that its rows were its columns.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
# A stated resolution outside this range is none (TIFF's "no unit" reads as 1 dpi) or
# nonsense: not used.
STATED_DPI_RANGE = (50.0, 10000.0)
# Resolutions across and down that differ by more than this share of the finer are two
# (a standard-mode fax: 204 × 98 dpi); a fine-mode fax's 204 × 196 is one, 200 dpi.
SQUARE_TOLERANCE = 0.1
# Rows of a page sampled before all are searched for a third tone (see ``is_bilevel``).
BILEVEL_SAMPLE = 16
# Share of a PDF page that one-bit images must cover for it to be a black-and-white scan.
BILEVEL_PDF_COVER = 0.5


@dataclass(frozen=True)
class DocumentList:
    """What a walk of the input found.

    ``root`` is the folder paths are relative to; ``paths`` are POSIX relative paths in
    sorted walk order; ``skipped`` are the relative paths of hidden entries, files of
    other types and symlinked folders (never followed, so a link loop cannot trap the walk).
    """

    root: Path
    paths: tuple[str, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class Page:
    """One decoded page: ``gray`` is (M, N) uint8, ink dark, 0..255; ``number`` counts from 1;
    ``dpi`` the resolution its file states (a PDF's: the one it is rasterized at; a page
    stated at two, the finer, which ``gray`` has been stretched to), if any; ``bilevel``
    whether it came in two tones only (black and white: a fax, a bilevel scan), before
    any stretching."""

    number: int
    gray: np.ndarray
    dpi: float | None = None
    bilevel: bool = False


@dataclass(frozen=True)
class SourceFile:
    """One document's bytes and identity, read once (hashed and decoded from the same bytes)."""

    path: Path
    data: bytes
    sha256: str
    size: int
    mtime_ns: int


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_documents(source: Path, exclude: Path | None = None) -> DocumentList:
    """Walk ``source`` (a folder, or one file); paths come sorted component by component.

    Hidden files and folders (name starting with ``.``) and unsupported suffixes are
    skipped and listed, as are folders that cannot be listed. Symlinked folders are not followed (``os.walk`` with
    ``followlinks=False``), which rules out symlink loops; symlinked files are read.
    A missing ``source`` raises ``FileNotFoundError``. ``exclude`` is a folder never
    entered (the output folder, when it lies inside the input: its field images are not scans).
    """
    source = Path(source)
    if not source.exists() and not source.is_symlink():
        raise FileNotFoundError(str(source))
    if not source.is_dir():
        return DocumentList(root=source.parent, paths=(source.name,), skipped=())
    excluded = Path(exclude).resolve() if exclude is not None else None
    paths: list[str] = []
    skipped: list[str] = []
    def unreadable_folder(exc: OSError) -> None:  # os.walk would skip it silently
        skipped.append(Path(exc.filename).relative_to(source).as_posix() if exc.filename else str(exc))

    for folder, dirnames, filenames in os.walk(source, onerror=unreadable_folder, followlinks=False):
        rel_folder = Path(folder).relative_to(source)
        kept = []
        for name in sorted(dirnames):
            full = Path(folder) / name
            if _hidden(name) or full.is_symlink() or (excluded is not None and full.resolve() == excluded):
                skipped.append((rel_folder / name).as_posix())
            else:
                kept.append(name)
        dirnames[:] = kept  # os.walk descends only into what is left, in this order
        for name in sorted(filenames):
            rel = (rel_folder / name).as_posix()
            if _hidden(name) or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                skipped.append(rel)
            else:
                paths.append(rel)
    # Sorted as a tree (component by component), so a file's place never depends on walk order.
    by_parts = lambda rel: rel.split("/")  # noqa: E731
    return DocumentList(root=source, paths=tuple(sorted(paths, key=by_parts)),
                        skipped=tuple(sorted(skipped, key=by_parts)))


def read_source(path: Path, config: InputConfig) -> SourceFile:
    """Read one file's bytes, refusing oversized files before reading them.

    An empty file is read (its hash identifies it for the next run); ``iter_pages`` refuses it.
    """
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DocumentError(FailureReason.unreadable, "not a regular file")
            limit = config.max_file_mb * 1024 * 1024
            if info.st_size > limit:
                raise DocumentError(
                    FailureReason.too_large,
                    f"file is {info.st_size / 2**20:.0f} MB, above input.max_file_mb={config.max_file_mb}",
                )
            data = handle.read()
    except PermissionError as exc:
        raise DocumentError(FailureReason.unreadable, f"permission denied: {exc.strerror or exc}") from None
    except IsADirectoryError:
        raise DocumentError(FailureReason.unreadable, "is a folder") from None
    except FileNotFoundError:
        raise DocumentError(FailureReason.unreadable, "file vanished or is a broken link") from None
    except OSError as exc:
        raise DocumentError(FailureReason.unreadable, f"cannot read file: {exc.strerror or exc}") from None
    return SourceFile(
        path=Path(path),
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mtime_ns=info.st_mtime_ns,
    )


def iter_pages(source: SourceFile, config: InputConfig) -> Iterator[Page]:
    """Decode ``source`` page by page; the type comes from the content, not the suffix."""
    if not source.data:
        raise DocumentError(FailureReason.empty_file, "file is empty (0 bytes)")
    if source.data.startswith(PDF_MAGIC):
        yield from _pdf_pages(source.data, config)
    else:
        yield from _image_pages(source.data, config)


def _check_size(width: int, height: int, config: InputConfig) -> None:
    """Refuse a page from its declared size, before any pixel is decoded."""
    if width * height > config.max_page_pixels:
        raise DocumentError(
            FailureReason.too_large,
            f"page is {width}×{height} = {width * height} pixels, above input.max_page_pixels="
            f"{config.max_page_pixels} (decompression bomb?)",
        )
    if min(width, height) < config.min_page_side:
        raise DocumentError(
            FailureReason.too_small,
            f"page is {width}×{height} pixels, below input.min_page_side={config.min_page_side}",
        )


def _image_pages(data: bytes, config: InputConfig) -> Iterator[Page]:
    with warnings.catch_warnings():
        # Pillow warns (or raises) about bombs by its own global limit; our limit is the
        # config's, checked from the header below, so make the warning an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow's own warnings are about damaged metadata (an EXIF block cut short, a tag
        # past the file's end): at worst the orientation is lost and the page is read as
        # stored. Not worth lines on stderr, which cron would mail.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DocumentError(FailureReason.too_large, f"decompression bomb refused: {exc}") from None
        except UnidentifiedImageError:
            raise DocumentError(
                FailureReason.unsupported_type,
                f"not a PNG, JPEG, TIFF, BMP, WebP or PDF file (starts with {data[:8]!r})",
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DocumentError(FailureReason.corrupt, f"cannot decode image header: {exc}") from None
        with image:
            frames = getattr(image, "n_frames", 1)
            for index in range(frames):
                try:
                    image.seek(index)
                except (OSError, EOFError, ValueError) as exc:
                    raise DocumentError(FailureReason.corrupt, f"page {index + 1}: cannot seek: {exc}") from None
                width, height = image.size
                _check_size(width, height, config)
                try:
                    image.load()
                    orientation = _orientation(image)
                    gray = to_gray(_upright(image, orientation))
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise DocumentError(FailureReason.too_large, f"decompression bomb refused: {exc}") from None
                except (OSError, ValueError, SyntaxError, EOFError) as exc:
                    # Truncated data: Pillow says "image file is truncated" or similar.
                    raise DocumentError(FailureReason.corrupt, f"page {index + 1}: cannot decode: {exc}") from None
                bilevel = is_bilevel(gray)
                gray, dpi = _square_pixels(gray, _stated_resolution(image, orientation), config)
                yield Page(number=index + 1, gray=gray, dpi=dpi, bilevel=bilevel)


def is_bilevel(gray: np.ndarray) -> bool:
    """Whether a (M, N) uint8 page holds two gray levels at most (black and white).

    Every BILEVEL_SAMPLE-th row is looked at first: a gray page shows more tones there
    already, in a tenth of the 2 ms that the whole of an A4 page at 200 dpi takes."""
    for rows in (gray[::BILEVEL_SAMPLE], gray):
        if np.count_nonzero(cv2.calcHist([np.ascontiguousarray(rows)], [0], None, [256], [0, 256])) > 2:
            return False
    return True


def _stated_resolution(image: Image.Image, orientation: int | None) -> tuple[float, float] | None:
    """The (across, down) resolution an image file states (PNG pHYs, JPEG JFIF or EXIF,
    TIFF tags), for the page turned upright by ``orientation``; None when it states none
    or nonsense."""
    try:
        across, down = (float(value) for value in image.info["dpi"])
    except (KeyError, TypeError, ValueError):
        return None
    low, high = STATED_DPI_RANGE
    if not all(math.isfinite(value) and low <= value <= high for value in (across, down)):
        return None
    return (down, across) if orientation in QUARTER_TURNS else (across, down)


def _square_pixels(gray: np.ndarray, resolution: tuple[float, float] | None,
                   config: InputConfig) -> tuple[np.ndarray, float | None]:
    """The page with square pixels, and its resolution (None when its file states none).

    A page scanned at two resolutions (a fax's 204 × 98 dpi) has its digits squashed; it
    is stretched along the coarser axis to the finer one, as the page was on paper.
    """
    if resolution is None:
        return gray, None
    across, down = resolution
    finer = max(across, down)
    if min(across, down) >= (1.0 - SQUARE_TOLERANCE) * finer:
        return gray, (across + down) / 2.0
    rows, cols = gray.shape
    size = (round(cols * finer / across), round(rows * finer / down))
    _check_size(*size, config)
    return cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR), finer


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    """``image`` turned as its EXIF ``orientation`` tag says (see ``_orientation``);
    itself when it has no such tag or the tag says upright (no copy of the page).

    Not ``ImageOps.exif_transpose``: it also writes the EXIF block back into the turned
    copy, which fails on a block whose other tags are damaged (a tag holding the wrong
    type), while the orientation itself reads fine.
    """
    return image.transpose(EXIF_TURNS[orientation]) if orientation in EXIF_TURNS else image


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag's value; None when absent or unreadable."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation)
    except (struct.error, ValueError, TypeError, KeyError, OSError, SyntaxError):
        return None  # a block too damaged to parse: the page is read as stored
    return value if isinstance(value, int) else None


def to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> (M, N) uint8, 0 black .. 255 white.

    16-bit and 32-bit integer samples are scaled from 0..65535; float samples are taken
    as 0..1 when their maximum is at most 1, else as 0..255. Transparent pixels are
    composited on white (a scanner's paper); palette images with transparency too.
    CMYK and other modes go through RGB.
    """
    mode = image.mode
    if mode == "L":
        return np.array(image, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        samples = np.asarray(image).astype(np.float32)
        return np.clip(np.rint(samples / SIXTEEN_TO_EIGHT), 0, 255).astype(np.uint8)
    if mode == "F":
        samples = np.nan_to_num(np.asarray(image, dtype=np.float32))
        scale = 255.0 if samples.size and float(samples.max()) <= 1.0 else 1.0
        return np.clip(np.rint(samples * scale), 0, 255).astype(np.uint8)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _pdf_pages(data: bytes, config: InputConfig) -> Iterator[Page]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise DocumentError(FailureReason.encrypted,
                                "PDF is password-protected; save an unprotected copy") from None
        raise DocumentError(FailureReason.corrupt, f"cannot open PDF: {exc}") from None
    scale = config.pdf_dpi / POINTS_PER_INCH
    try:
        count = len(document)
        if count == 0:
            raise DocumentError(FailureReason.corrupt, "PDF has no pages")
        for index in range(count):
            try:
                page = document[index]
                width_pt, height_pt = page.get_size()
            except pdfium.PdfiumError as exc:
                raise DocumentError(FailureReason.corrupt, f"page {index + 1}: {exc}") from None
            try:
                _check_size(int(round(width_pt * scale)), int(round(height_pt * scale)), config)
                bitmap = page.render(scale=scale, grayscale=True, force_bitmap_format=pdfium_c.FPDFBitmap_Gray)
                gray = np.array(bitmap.to_numpy(), dtype=np.uint8, copy=True)
                scanned_bilevel = _scanned_in_black_and_white(page, width_pt * height_pt)
            except pdfium.PdfiumError as exc:
                raise DocumentError(FailureReason.corrupt, f"page {index + 1}: cannot render: {exc}") from None
            finally:
                page.close()
            if gray.ndim == 3:
                gray = gray[:, :, 0].copy()
            yield Page(number=index + 1, gray=gray, dpi=float(config.pdf_dpi),
                       bilevel=scanned_bilevel or is_bilevel(gray))
    finally:
        document.close()


def _scanned_in_black_and_white(page, area_pt: float) -> bool:
    """Whether a PDF page is a black-and-white scan: its images (a fax server's, a
    scanner's) are all one bit a pixel and cover BILEVEL_PDF_COVER of it at least. Its
    rendering is gray all the same, where the image is scaled to the rendering's size.
    An image whose description cannot be read makes the page count as gray: it still reads.
    (``get_bounds`` is pypdfium2 5's; setup.cfg asks for 5 or later.)"""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    covered = 0.0
    try:
        for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
            if image.get_metadata().bits_per_pixel != 1:
                return False
            left, bottom, right, top = image.get_bounds()
            covered += max(0.0, right - left) * max(0.0, top - bottom)
    except pdfium.PdfiumError:
        return False
    return area_pt > 0 and covered >= BILEVEL_PDF_COVER * area_pt
