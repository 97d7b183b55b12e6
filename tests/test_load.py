"""load: the walk, and every kind of bad input, each built here in tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.config import InputConfig
from pipeline.errors import DocumentError, FailureReason
from pipeline.load import find_documents, iter_pages, read_source, to_gray

CONFIG = InputConfig()


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG") if mode else Image.fromarray(array).save(
        buffer, format="PNG")
    return buffer.getvalue()


def page_array(seed: int = 0, shape=(64, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    page = np.full(shape, 255, np.uint8)
    page[20:40, 10:60] = rng.integers(0, 80, size=(20, 50), dtype=np.uint8)
    return page


def read_all(path: Path, config: InputConfig = CONFIG) -> list:
    return list(iter_pages(read_source(path, config), config))


def reason_of(path: Path, config: InputConfig = CONFIG) -> FailureReason:
    with pytest.raises(DocumentError) as caught:
        read_all(path, config)
    assert caught.value.detail  # every failure says why
    return caught.value.reason


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width×height 8-bit gray pixels (cheap to build)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


# --- PDF helpers ---------------------------------------------------------------------

def _pdf_from_objects(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R ".encode() + trailer_extra
    out += f">>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes = b"secret", owner_password: bytes = b"owner") -> bytes:
    """A one-page PDF under the standard security handler, revision 2 (40-bit RC4),
    with a user password: PDF 1.7 spec, algorithms 2, 3 and 4 of section 7.6.3."""
    pad = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
    padded = lambda pw: (pw + pad)[:32]  # noqa: E731
    owner = _rc4(hashlib.md5(padded(owner_password)).digest()[:5], padded(user_password))
    permissions = struct.pack("<i", -44)
    file_id = b"0123456789abcdef"
    key = hashlib.md5(padded(user_password) + owner + permissions + file_id).digest()[:5]
    user = _rc4(key, pad)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + owner.hex().encode() + b"> /U <" + user.hex().encode()
        + b"> /P -44 >>",
    ]
    trailer = b"/Encrypt 4 0 R /ID [<" + file_id.hex().encode() + b"> <" + file_id.hex().encode() + b">] "
    return _pdf_from_objects(objects, trailer)


def two_page_pdf() -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    document.new_page(200, 100)
    document.new_page(100, 150)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


# --- the walk ------------------------------------------------------------------------

def test_walk_is_sorted_recursive_and_skips_hidden_and_other_types(tmp_path):
    for name in ["b/2.png", "b/1.jpg", "a.PDF", "c/d/e.tiff", ".hidden.png", ".git/x.png", "notes.txt", "z.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = find_documents(tmp_path)
    assert listing.root == tmp_path
    assert listing.paths == ("a.PDF", "b/1.jpg", "b/2.png", "c/d/e.tiff", "z.webp")
    assert sorted(listing.skipped) == [".git", ".hidden.png", "notes.txt"]


def test_single_file_input_is_relative_to_its_folder(tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(png_bytes(page_array()))
    listing = find_documents(path)
    assert listing.root == tmp_path and listing.paths == ("one.png",)


def test_missing_input_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_documents(tmp_path / "nope")


def test_symlink_loop_does_not_trap_the_walk(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.png").write_bytes(png_bytes(page_array()))
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # sub/loop -> root -> sub -> ...
    os.symlink("self", tmp_path / "self")  # a link to itself
    listing = find_documents(tmp_path)
    assert listing.paths == ("sub/p.png",)
    assert "sub/loop" in listing.skipped


# --- good pages ----------------------------------------------------------------------

def test_png_decodes_to_the_same_gray_pixels(tmp_path):
    page = page_array(1)
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(page))
    pages = read_all(path)
    assert len(pages) == 1 and pages[0].number == 1
    assert pages[0].gray.dtype == np.uint8
    np.testing.assert_array_equal(pages[0].gray, page)


def test_source_hash_and_size(tmp_path):
    data = png_bytes(page_array(2))
    path = tmp_path / "p.png"
    path.write_bytes(data)
    source = read_source(path, CONFIG)
    assert source.sha256 == hashlib.sha256(data).hexdigest() and source.size == len(data)


def test_every_page_of_a_multipage_tiff(tmp_path):
    frames = [Image.fromarray(page_array(seed)) for seed in range(3)]
    path = tmp_path / "scan.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pages = read_all(path)
    assert [p.number for p in pages] == [1, 2, 3]
    np.testing.assert_array_equal(pages[2].gray, page_array(2))


def test_every_page_of_a_pdf_at_the_configured_dpi(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(two_page_pdf())
    pages = read_all(path, InputConfig(pdf_dpi=144))
    # 200×100 pt at 144 dpi -> 400×200 px; 100×150 pt -> 200×300 px.
    assert [p.gray.shape for p in pages] == [(200, 400), (300, 200)]
    assert all(p.gray.dtype == np.uint8 and p.gray.min() == 255 for p in pages)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("BMP", ".bmp"), ("WEBP", ".webp")])
def test_other_formats_decode(tmp_path, fmt, suffix):
    path = tmp_path / f"p{suffix}"
    Image.fromarray(page_array(3)).save(path, format=fmt)
    pages = read_all(path)
    assert pages[0].gray.shape == (64, 80) and pages[0].gray.dtype == np.uint8


def test_type_comes_from_content_not_suffix(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(png_bytes(page_array(4)))
    np.testing.assert_array_equal(read_all(path)[0].gray, page_array(4))


def test_sixteen_bit_gray_scales_to_eight(tmp_path):
    wide = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 16 % 65536).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    gray = read_all(path)[0].gray
    expected = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gray, expected)


def test_alpha_composites_on_white(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)  # black, fully transparent ...
    rgba[8:16, 8:16, 3] = 255               # ... except an opaque black square
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    gray = read_all(path)[0].gray
    assert gray[0, 0] == 255 and gray[10, 10] == 0


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.paste(1, (0, 0, 16, 32))
    image.info["transparency"] = 0  # index 0 (black) is transparent -> white paper
    path = tmp_path / "pal.png"
    image.save(path, transparency=0)
    gray = read_all(path)[0].gray
    assert gray.min() == 255


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (40, 40), (0, 0, 0, 0))
    cmyk.paste((0, 0, 0, 255), (10, 10, 30, 30))
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    gray = read_all(path)[0].gray
    assert gray[0, 0] > 240 and gray[20, 20] < 30


def test_to_gray_handles_bilevel_and_la():
    bilevel = Image.fromarray(np.array([[0, 255] * 8] * 16, np.uint8)).convert("1")
    assert set(np.unique(to_gray(bilevel))) == {0, 255}
    la = Image.fromarray(np.dstack([np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)]), mode="LA")
    assert to_gray(la).min() == 255  # transparent ink is paper


def test_all_black_page_is_a_page_not_an_error(tmp_path):
    path = tmp_path / "black.png"
    path.write_bytes(png_bytes(np.zeros((100, 100), np.uint8)))
    pages = read_all(path)
    assert len(pages) == 1 and pages[0].gray.max() == 0


# --- bad inputs ----------------------------------------------------------------------

def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert reason_of(path) is FailureReason.empty_file


def test_truncated_png(tmp_path):
    data = png_bytes(np.random.default_rng(5).integers(0, 256, (200, 200), dtype=np.uint8))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path) is FailureReason.corrupt


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (200, 200), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert reason_of(path) is FailureReason.corrupt


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert reason_of(path) is FailureReason.unsupported_type


def test_one_by_one_image(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(png_bytes(np.zeros((1, 1), np.uint8)))
    assert reason_of(path) is FailureReason.too_small


def test_decompression_bomb_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(40_000, 40_000))
    assert path.stat().st_size < 2_000  # the file is tiny; only the header is big
    assert reason_of(path) is FailureReason.too_large


def test_page_above_configured_pixel_limit_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(2_000, 1_000))  # 2 Mpx declared, data would not even decode
    assert reason_of(path, InputConfig(max_page_pixels=1_000_000)) is FailureReason.too_large


def test_file_above_size_limit_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.truncate(2 * 1024 * 1024)  # sparse: 2 MB of zeros, no disk used
    assert reason_of(path, InputConfig(max_file_mb=1)) is FailureReason.too_large


def test_corrupt_pdf(tmp_path):
    path = tmp_path / "bad.pdf"
    path.write_bytes(two_page_pdf()[:120])
    assert reason_of(path) is FailureReason.corrupt


def test_password_protected_pdf(tmp_path):
    import pypdfium2 as pdfium

    data = encrypted_pdf()
    # The hand-made file is a valid PDF: it opens with the right password.
    with_password = pdfium.PdfDocument(data, password="secret")
    assert len(with_password) == 1
    with_password.close()
    path = tmp_path / "locked.pdf"
    path.write_bytes(data)
    assert reason_of(path) is FailureReason.encrypted


def test_unreadable_file_via_permission_error(tmp_path, monkeypatch):
    import pipeline.load as load

    path = tmp_path / "secret.png"
    path.write_bytes(png_bytes(page_array()))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(load, "open", denied, raising=False)
    assert reason_of(path) is FailureReason.unreadable


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; see the monkeypatched test")
def test_unreadable_file_chmod_000(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(png_bytes(page_array()))
    path.chmod(0)
    try:
        assert reason_of(path) is FailureReason.unreadable
    finally:
        path.chmod(0o644)


def test_broken_symlink_is_unreadable(tmp_path):
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert find_documents(tmp_path).paths == ("link.png",)
    assert reason_of(tmp_path / "link.png") is FailureReason.unreadable


def test_non_ascii_and_formula_name_reads(tmp_path):
    path = tmp_path / "=cmd|' ñ.png"
    path.write_bytes(png_bytes(page_array(7)))
    assert find_documents(tmp_path).paths == ("=cmd|' ñ.png",)
    np.testing.assert_array_equal(read_all(path)[0].gray, page_array(7))


def test_pdf_page_too_large_at_the_configured_dpi_is_refused_before_rendering(tmp_path):
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    document.new_page(14_400, 14_400)  # 200 in square: 3.7 Gpx at 300 dpi
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    path = tmp_path / "poster.pdf"
    path.write_bytes(buffer.getvalue())
    assert reason_of(path) is FailureReason.too_large


def test_unlistable_folder_is_skipped_and_counted(tmp_path, monkeypatch):
    import pipeline.load as load

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.png").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):
        for folder, dirnames, filenames in real_walk(top, onerror=onerror, followlinks=followlinks):
            if Path(folder).name == "locked":
                onerror(PermissionError(13, "Permission denied", folder))
                continue
            yield folder, dirnames, filenames

    monkeypatch.setattr(load.os, "walk", walk)
    listing = find_documents(tmp_path)
    assert listing.paths == ("ok/a.png",) and listing.skipped == ("locked",)


@pytest.mark.parametrize("orientation, stored_as", [
    (3, lambda page: np.rot90(page, 2)),   # stored upside down
    (6, lambda page: np.rot90(page, 1)),   # stored turned a quarter counter-clockwise: shown turned clockwise
    (8, lambda page: np.rot90(page, -1)),
    (2, np.fliplr),                        # stored mirrored
    (4, np.flipud),
    (5, np.transpose),                     # mirrored across the diagonal
    (7, lambda page: np.rot90(page, 2).T),  # ...and across the other one
])
def test_exif_orientation_turns_the_page_upright(tmp_path, orientation, stored_as):
    page = page_array(5)
    exif = Image.Exif()
    exif[274] = orientation  # the EXIF Orientation tag
    path = tmp_path / "phone.png"
    Image.fromarray(np.ascontiguousarray(stored_as(page))).save(path, format="PNG", exif=exif)
    np.testing.assert_array_equal(read_all(path)[0].gray, page)


def test_damaged_exif_reads_the_page_as_stored_without_a_warning(tmp_path):
    path = tmp_path / "damaged.jpg"
    # An EXIF block whose directory is cut short after its first entry's tag.
    Image.fromarray(page_array(6)).save(path, format="JPEG",
                                        exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pages = read_all(path)
    assert pages[0].gray.shape == (64, 80)


def test_a_damaged_tag_beside_the_orientation_still_turns_the_page(tmp_path):
    page = page_array(8)
    exif = Image.Exif()
    exif[274] = 6
    exif[0x010F] = "Scanner"  # the maker's name, as text
    block = exif.tobytes()
    # The maker tag's number turned into ColorMap's, which must hold numbers, not text.
    damaged = block.replace(b"\x01\x0f\x00\x02", b"\x01\x40\x00\x02").replace(b"\x0f\x01\x02\x00", b"\x40\x01\x02\x00")
    assert damaged != block
    path = tmp_path / "damaged.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(page, 1))).save(path, format="PNG", exif=damaged)
    np.testing.assert_array_equal(read_all(path)[0].gray, page)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_a_pages_stated_resolution_comes_with_it(tmp_path, fmt, suffix):
    stated, unstated = tmp_path / f"stated{suffix}", tmp_path / f"unstated{suffix}"
    Image.fromarray(page_array(7)).save(stated, format=fmt, dpi=(300, 300))
    Image.fromarray(page_array(7)).save(unstated, format=fmt)
    assert read_all(stated)[0].dpi == pytest.approx(300, abs=0.01)
    assert read_all(unstated)[0].dpi is None  # Pillow writes a TIFF without a unit: 1 "dpi"


def test_a_pdf_pages_resolution_is_the_one_it_is_rasterized_at(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(two_page_pdf())
    assert [p.dpi for p in read_all(path, InputConfig(pdf_dpi=144))] == [144.0, 144.0]


def test_a_fax_scanned_at_two_resolutions_is_stretched_to_square_pixels(tmp_path):
    # A standard-mode fax: 204 dpi across, 98 down, bilevel and Group 4 compressed; its
    # strokes stand half as tall as on paper until the rows are stretched.
    paper = np.full((204, 160), 255, np.uint8)
    cv2.putText(paper, "47", (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 4.0, 0, 12)
    squashed = cv2.resize(paper, (160, 98), interpolation=cv2.INTER_AREA)
    path = tmp_path / "fax.tif"
    Image.fromarray(squashed).convert("1").save(path, format="TIFF", dpi=(204, 98), compression="group4")
    (page,) = read_all(path)
    assert page.gray.shape == (204, 160) and page.dpi == pytest.approx(204)
    assert np.mean(np.abs(page.gray.astype(float) - paper)) < 12  # the digits stand as tall as on paper
    # Black and white as stored, though the stretch put grays on the rows it filled in.
    assert page.bilevel and len(np.unique(page.gray)) > 2
    # A fine-mode fax's 204 × 196 is near enough square: read as it is, at about 200 dpi.
    Image.fromarray(paper).save(path, format="TIFF", dpi=(204, 196))
    (page,) = read_all(path)
    assert page.gray.shape == (204, 160) and page.dpi == pytest.approx(200)


def test_a_stretch_to_square_pixels_past_the_pixel_limit_is_refused(tmp_path):
    # 10,000 dpi across and 50 down: stretching the rows 200-fold would make a bomb.
    path = tmp_path / "odd.tif"
    Image.fromarray(page_array(9)).save(path, format="TIFF", dpi=(10000, 50))
    assert reason_of(path, InputConfig(max_page_pixels=1_000_000)) == FailureReason.too_large
    assert read_all(path)[0].gray.shape == (64 * 200, 80)  # within the default limit it reads


def test_a_page_is_bilevel_when_it_holds_two_tones_only(tmp_path):
    gray = page_array(3)
    path = tmp_path / "page.png"
    path.write_bytes(png_bytes(gray))
    (page,) = read_all(path)
    assert not page.bilevel
    two_tones = np.where(gray < 128, 0, 255).astype(np.uint8)
    path.write_bytes(png_bytes(two_tones))  # a black-and-white scan saved as gray
    (page,) = read_all(path)
    assert page.bilevel
    path = tmp_path / "bw.tif"
    Image.fromarray(two_tones).convert("1").save(path, format="TIFF", compression="group4")
    (page,) = read_all(path)
    assert page.bilevel
    Image.fromarray(np.full_like(gray, 255)).save(path, format="TIFF")  # blank paper: one tone
    (page,) = read_all(path)
    assert page.bilevel


def test_a_pdf_of_a_black_and_white_scan_is_bilevel_though_it_renders_gray(tmp_path):
    # A fax server's PDF: one Group 4 image at 204 x 98 dpi filling the page. Rendered at
    # input.pdf_dpi it is scaled, and gray at its edges; a gray scan's PDF is not bilevel.
    two_tones = np.where(page_array(5, shape=(98, 204)) < 128, 0, 255).astype(np.uint8)
    path = tmp_path / "fax.pdf"
    Image.fromarray(two_tones).convert("1").save(path, dpi=(204, 98))
    (page,) = read_all(path)
    assert page.bilevel and len(np.unique(page.gray)) > 2
    assert page.gray.shape == pytest.approx((300, 300), abs=2)  # the page's proportions, at 300 dpi
    Image.fromarray(page_array(5, shape=(98, 204))).save(path, dpi=(204, 98))
    (page,) = read_all(path)
    assert not page.bilevel
