"""Synthetic scanned pages with known truth: MNIST test digits written on cheques and forms.

Each page gets the furniture real documents have (labels, headings and a printed
sentence, underlines, comb boxes, table rules, a page border, light security print on
cheques) and the damage scanning does (skew, uneven lighting, blur, noise, specks, JPEG).
Digits come from MNIST's **test** split only, so pages never show the model a digit it
was trained on. Truth boxes are the tight boxes of the digits' ink on the final image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.data import load_mnist

# Scan resolutions a page is drawn at, one each (200 twice as often).
SCAN_DPI = (150, 200, 200)
# Digit heights on the page, pixels: 4-8 mm handwriting at 150-200 dpi.
DIGIT_HEIGHT = (25, 60)
# MNIST pixels at or below this are background when a digit's tight box is taken.
MNIST_FLOOR = 40
# Gray levels of inks once scanned to grayscale: black, blue and red ballpoint.
INK_TONES = ((25, 60), (70, 105), (100, 130))
PRINT_TONE = (15, 60)
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX)
LABELS = ("Account No.", "Amount", "Date", "Phone", "Reference", "Postcode", "Customer ID",
          "Invoice no.", "Quantity", "Branch code", "Total", "Serial")
HEADINGS = ("APPLICATION FORM", "Order Form", "DEPOSIT SLIP", "Registration", "Claim Form")
SENTENCES = ("Please write clearly in dark ink, one digit per box.",
             "Fill in all fields. Incomplete forms will be returned.",
             "For office use only - do not write below this line.")
ITEMS = ("Paper", "Toner", "Labels", "Pens", "Folders", "Stamps")
# Chance that two neighbouring free-written digits touch, and that a digit is broken.
TOUCH_CHANCE = 0.08
BREAK_CHANCE = 0.04
# Share of pages that are cheques; the rest are forms.
CHEQUE_SHARE = 0.35
# A standard-mode fax (ITU-T T.4): 204 dots an inch across, 98 lines down, black or white.
FAX_DPI = (204, 98)


@dataclass(frozen=True)
class _Digits:
    images: np.ndarray  # (N, 28, 28) uint8, ink high
    labels: np.ndarray  # (N,) uint8


class _Page:
    """A page being drawn: print and handwriting as alpha layers, plus the truth."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng = rng
        self.height, self.width = height, width
        self.printed = np.zeros((height, width), np.uint8)  # 255 = printed ink
        self.hand = np.zeros((height, width), np.float32)  # 0..1 handwriting alpha
        self.fields: list[dict] = []
        self.tone = float(rng.uniform(*INK_TONES[rng.choice(3, p=[0.5, 0.35, 0.15])]))

    def text(self, text: str, x: int, baseline: int, scale: float, thickness: int) -> tuple[int, int]:
        font = FONTS[self.rng.integers(len(FONTS))]
        cv2.putText(self.printed, text, (x, baseline), font, scale, 255, thickness, cv2.LINE_AA)
        (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
        return w, h

    def digit(self, rng: np.random.Generator, digits: _Digits, height: float, x: int, bottom: int,
              broken: bool = False, cell: tuple[int, int] | None = None) -> tuple[str, tuple[int, int, int, int]] | None:
        """Write one MNIST digit with its bottom at ``bottom``, from column ``x`` or centred
        in ``cell`` (x, width); returns its label and tight box."""
        index = int(rng.integers(len(digits.labels)))
        image = digits.images[index]
        rows = np.flatnonzero((image > MNIST_FLOOR).any(axis=1))
        cols = np.flatnonzero((image > MNIST_FLOOR).any(axis=0))
        image = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255.0
        scale = height * rng.uniform(0.85, 1.15) / image.shape[0]
        new_w = max(2, round(image.shape[1] * scale))
        new_h = max(2, round(image.shape[0] * scale))
        ink = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if broken and new_h > 10:
            band = int(rng.uniform(0.25, 0.55) * new_h)
            ink[band:band + max(2, new_h // 12)] = 0.0
        if cell is not None:
            x = cell[0] + (cell[1] - new_w) // 2 + int(rng.integers(-2, 3))
        y = bottom - new_h
        if x < 0 or y < 0 or x + new_w > self.width or bottom > self.height:
            return None
        view = self.hand[y:bottom, x:x + new_w]
        np.maximum(view, np.clip(ink * 1.3, 0.0, 1.0), out=view)
        visible = np.flatnonzero((ink > MNIST_FLOOR / 255.0).any(axis=1))
        top = y + int(visible[0])
        low = y + int(visible[-1]) + 1
        return str(int(digits.labels[index])), (x, top, new_w, low - top)

    def add_field(self, text: str, boxes: list[tuple[int, int, int, int]]) -> None:
        if not text:
            return
        x0 = min(b[0] for b in boxes)
        y0 = min(b[1] for b in boxes)
        x1 = max(b[0] + b[2] for b in boxes)
        y1 = max(b[1] + b[3] for b in boxes)
        self.fields.append({"text": text, "bbox": [x0, y0, x1 - x0, y1 - y0], "digit_boxes": boxes})


def _write_number(page: _Page, digits: _Digits, count: int, height: float, x: int, bottom: int,
                  cells: list[int] | None = None, punctuation: bool = False) -> int:
    """Write ``count`` digits from ``x`` (or centred in ``cells``' x positions); returns the end x."""
    rng = page.rng
    text, boxes = "", []
    for k in range(count):
        jitter = int(rng.uniform(-0.1, 0.1) * height)
        broken = rng.random() < BREAK_CHANCE
        cell = cells[k] if cells is not None else None
        written = page.digit(rng, digits, height, x, bottom + jitter, broken, cell)
        if written is None:
            break
        label, box = written
        text += label
        boxes.append(box)
        if cells is None:
            touch = k < count - 1 and rng.random() < TOUCH_CHANCE
            gap = rng.uniform(-0.12, -0.04) if touch else rng.uniform(0.08, 0.45)
            x = box[0] + box[2] + int(gap * height)
            if punctuation and count - k - 1 in (3, 6) and rng.random() < 0.6:
                # A thousands dot between digits, as on cheque amounts ("1.500").
                radius = max(2, int(0.05 * height))
                cv2.circle(page.hand, (x + int(0.1 * height), bottom - radius), radius, 1.0, -1)
                x += int(0.25 * height)
    page.add_field(text, boxes)
    if boxes:
        end = boxes[-1][0] + boxes[-1][2]
        if punctuation and rng.random() < 0.5:
            dash = int(0.35 * height)
            cv2.line(page.hand, (end + int(0.2 * height), bottom - int(0.3 * height)),
                     (end + int(0.2 * height) + dash, bottom - int(0.3 * height)), 1.0, max(2, int(height / 14)))
        return end
    return x


def _comb(page: _Page, x: int, bottom: int, cells: int, height: float, thickness: int) -> list[tuple[int, int]]:
    """Draw a row of comb boxes whose bottom rule is at ``bottom``; returns (x, width) per cell."""
    cell_w = int(height * page.rng.uniform(1.2, 1.5))
    cell_h = int(height * page.rng.uniform(1.3, 1.5))
    top = bottom - cell_h
    cv2.rectangle(page.printed, (x, top), (x + cells * cell_w, bottom), 255, thickness)
    for k in range(1, cells):
        cv2.line(page.printed, (x + k * cell_w, top), (x + k * cell_w, bottom), 255, thickness)
    return [(x + k * cell_w, cell_w) for k in range(cells)]


def _form(rng: np.random.Generator, digits: _Digits, dpi: int) -> _Page:
    page = _Page(rng, int(11.69 * dpi), int(8.27 * dpi))
    unit = dpi / 200.0
    margin = int(0.6 * dpi)
    thick = max(1, round(unit * rng.uniform(1.0, 2.2)))
    if rng.random() < 0.5:
        cv2.rectangle(page.printed, (margin // 2, margin // 2),
                      (page.width - margin // 2, page.height - margin // 2), 255, thick)
    y = margin + int(60 * unit)
    page.text(str(rng.choice(HEADINGS)), margin, y, 1.6 * unit, max(2, int(3 * unit)))
    y += int(70 * unit)
    page.text(str(rng.choice(SENTENCES)), margin, y, 0.75 * unit, max(1, round(1.5 * unit)))
    y += int(40 * unit)
    while True:
        height = rng.uniform(*DIGIT_HEIGHT) * unit * 1.1
        kind = str(rng.choice(["underline", "comb", "free", "table", "comb"]))
        need = height * (6.5 if kind == "table" else 2.6)
        if y + need > page.height - margin:
            break
        label_scale = rng.uniform(0.6, 0.9) * unit
        bottom = int(y + height * 1.6)
        if kind == "table":
            rows = int(rng.integers(3, 5))
            row_h = int(height * 1.6)
            widths = [int(200 * unit), int(height * 6), int(height * 6)]
            x0, top = margin, int(y)
            right = x0 + sum(widths)
            for r in range(rows + 1):
                cv2.line(page.printed, (x0, top + r * row_h), (right, top + r * row_h), 255, thick)
            for edge in np.cumsum([x0] + widths):
                cv2.line(page.printed, (int(edge), top), (int(edge), top + rows * row_h), 255, thick)
            for r in range(rows):
                line_bottom = top + (r + 1) * row_h
                page.text(str(rng.choice(ITEMS)), x0 + int(10 * unit), line_bottom - int(row_h * 0.3),
                          label_scale, max(1, round(unit * 1.4)))
                for c in (1, 2):
                    if c == 2 and rng.random() < 0.4:
                        continue
                    start = x0 + sum(widths[:c]) + int(height * rng.uniform(0.4, 1.5))
                    _write_number(page, digits, int(rng.integers(1, 5)), height * 0.9, start,
                                  line_bottom - int(row_h * 0.18))
            y = top + rows * row_h + height
            continue
        label = str(rng.choice(LABELS))
        w, _ = page.text(label, margin, bottom - int(0.1 * height), label_scale, max(1, round(unit * 1.4)))
        x = margin + w + int(height * rng.uniform(1.8, 3.0))
        count = int(rng.integers(3, 10))
        if kind == "comb":
            cells = _comb(page, x, bottom + int(0.2 * height), count + int(rng.integers(0, 3)), height, thick)
            if cells[-1][0] + cells[-1][1] < page.width - margin:
                _write_number(page, digits, count, height, x, bottom, cells=cells)
        elif kind == "underline":
            end = _write_number(page, digits, count, height, x + int(0.3 * height), bottom)
            cv2.line(page.printed, (x, bottom + 2 + thick), (max(end, x + 100) + int(height), bottom + 2 + thick),
                     255, thick)
        else:
            _write_number(page, digits, count, height, x, bottom)
        y = bottom + height * rng.uniform(1.0, 1.8)
    return page


def _security_print(page: _Page, strength: float) -> np.ndarray:
    """A faint guilloche of sine waves, as darkness (0..1) over the page."""
    rows, cols = np.mgrid[0:page.height, 0:page.width].astype(np.float32)
    period = page.rng.uniform(18, 40)
    wave = np.sin((rows + 6.0 * np.sin(cols / page.rng.uniform(30, 60))) * 2 * np.pi / period)
    return strength * np.clip(wave, 0.0, 1.0) ** 8


def _cheque(rng: np.random.Generator, digits: _Digits, dpi: int) -> _Page:
    unit = dpi / 200.0
    page = _Page(rng, int(2.9 * dpi), int(6.5 * dpi))
    thick = max(1, round(unit * rng.uniform(1.0, 2.0)))
    small = max(1, round(1.3 * unit))
    page.text("BANK OF " + str(rng.choice(["NOWHERE", "ELSEWHERE", "THE NORTH"])), int(30 * unit), int(50 * unit),
              0.9 * unit, max(2, int(2 * unit)))
    height = rng.uniform(35, 55) * unit
    # Date in comb boxes, top right.
    x = int(page.width * 0.55)
    w, _ = page.text("DATE", x, int(70 * unit), 0.6 * unit, small)
    cells = _comb(page, x + w + int(height * 1.8), int(75 * unit + height * 0.45), 8, height * 0.75, thick)
    _write_number(page, digits, 8, height * 0.75, 0, int(75 * unit + height * 0.25), cells=cells)
    # Payee line with printed words only.
    y = int(page.height * 0.42)
    page.text("PAY TO THE ORDER OF", int(30 * unit), y, 0.55 * unit, small)
    cv2.line(page.printed, (int(260 * unit), y + 4), (int(page.width * 0.62), y + 4), 255, thick)
    # Courtesy amount in a box on the right.
    box_x, box_w = int(page.width * 0.7), int(page.width * 0.27)
    box_y, box_h = int(page.height * 0.3), int(height * 1.6)
    page.text("$", box_x - int(25 * unit), box_y + int(box_h * 0.7), 0.9 * unit, small)
    cv2.rectangle(page.printed, (box_x, box_y), (box_x + box_w, box_y + box_h), 255, thick)
    count = int(rng.integers(3, 7))
    _write_number(page, digits, count, height, box_x + int(0.3 * height), box_y + int(box_h * 0.82),
                  punctuation=True)
    # Account number on an underline, bottom left.
    y = int(page.height * 0.78)
    w, _ = page.text("ACCOUNT", int(30 * unit), y, 0.55 * unit, small)
    x = int(30 * unit) + w + int(height * 2.0)
    end = _write_number(page, digits, int(rng.integers(6, 11)), height * 0.85, x, y)
    cv2.line(page.printed, (x - int(10 * unit), y + 3 + thick), (end + int(height), y + 3 + thick), 255, thick)
    # Signature line and its printed caption.
    cv2.line(page.printed, (int(page.width * 0.62), int(page.height * 0.85)),
             (int(page.width * 0.95), int(page.height * 0.85)), 255, thick)
    page.text("AUTHORIZED SIGNATURE", int(page.width * 0.66), int(page.height * 0.93), 0.45 * unit, small)
    return page


def _scan(page: _Page, texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Render the page as a scanner would: (gray uint8 image, 2x3 affine applied to the content)."""
    rng = page.rng
    paper = rng.uniform(215, 250)
    darkness = np.maximum(page.printed.astype(np.float32) / 255.0 * (1 - rng.uniform(*PRINT_TONE) / paper),
                          page.hand * (1 - page.tone / paper))
    if texture is not None:
        darkness = np.maximum(darkness, texture)
    angle = rng.uniform(-4.0, 4.0)
    matrix = cv2.getRotationMatrix2D((page.width / 2.0, page.height / 2.0), angle, 1.0)
    darkness = cv2.warpAffine(darkness, matrix, (page.width, page.height), flags=cv2.INTER_LINEAR, borderValue=0.0)
    rows, cols = np.mgrid[0:page.height, 0:page.width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * cols / page.width + np.sin(direction) * rows / page.height)
    light = 1.0 - rng.uniform(0.05, 0.2) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    gray = paper * light * (1.0 - darkness)
    gray = cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.4, 1.0))
    gray += rng.normal(0.0, rng.uniform(1.5, 4.0), gray.shape).astype(np.float32)
    for _ in range(int(rng.integers(10, 120))):
        cv2.circle(gray, (int(rng.integers(page.width)), int(rng.integers(page.height))),
                   int(rng.integers(1, 3)), float(rng.uniform(40, 140)), -1)
    return np.clip(gray, 0, 255).astype(np.uint8), matrix


def _moved(box: list[int], matrix: np.ndarray, width: int, height: int) -> list[int]:
    x, y, w, h = box
    corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], np.float64) @ matrix.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0 = max(0, x0), max(0, y0)
    return [int(x0), int(y0), int(min(width, x1) - x0), int(min(height, y1) - y0)]


def make_page(digits: _Digits, rng: np.random.Generator, cheque: bool,
              dpi: int | None = None) -> tuple[np.ndarray, list[dict], int]:
    """One synthetic page: (gray (M, N) uint8, fields [{"text", "bbox", "digits"}] in page
    pixels, the scan's resolution); "digits" holds each digit's {"label", "bbox"}.
    ``dpi``: the scan's resolution (default: one of SCAN_DPI, drawn)."""
    drawn = int(rng.choice(SCAN_DPI))  # drawn even when given: the rest of the page stays the same
    dpi = dpi or drawn
    page = _cheque(rng, digits, dpi) if cheque else _form(rng, digits, dpi)
    texture = _security_print(page, rng.uniform(0.08, 0.18)) if cheque else None
    gray, matrix = _scan(page, texture)
    fields = [{"text": f["text"], "bbox": _moved(f["bbox"], matrix, page.width, page.height),
               "digits": [{"label": label, "bbox": _moved(list(box), matrix, page.width, page.height)}
                          for label, box in zip(f["text"], f["digit_boxes"])]}
              for f in page.fields]
    return gray, fields, dpi


def fax_page(gray: np.ndarray, dpi: int) -> np.ndarray:
    """``gray`` scanned at ``dpi`` as a standard-mode fax sends it: resampled to FAX_DPI
    (across, down) and made black or white by Otsu's threshold; (M, N) uint8, 0 or 255."""
    across, down = FAX_DPI
    rows, cols = gray.shape
    size = (round(cols * across / dpi), round(rows * down / dpi))
    return _two_tone(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))


def _two_tone(gray: np.ndarray) -> np.ndarray:
    """``gray`` made black or white by Otsu's threshold: (M, N) uint8, 0 or 255."""
    return cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _scaled(box: list[int], across: float, down: float) -> list[int]:
    x, y, w, h = box
    x0, y0 = int(np.floor(x * across)), int(np.floor(y * down))
    return [x0, y0, int(np.ceil((x + w) * across)) - x0, int(np.ceil((y + h) * down)) - y0]


def _faxed(gray: np.ndarray, fields: list[dict], dpi: int) -> tuple[np.ndarray, list[dict], int, int]:
    """The page as a fax, its truth moved onto the page as read (square pixels at the fax's
    finer resolution: ``load`` stretches the coarser axis), and that page's (width, height)."""
    faxed = fax_page(gray, dpi)
    across, down = FAX_DPI
    width, height = faxed.shape[1], round(faxed.shape[0] * across / down)
    sx, sy = width / gray.shape[1], height / gray.shape[0]
    moved = [{"text": f["text"], "bbox": _scaled(f["bbox"], sx, sy),
              "digits": [{"label": d["label"], "bbox": _scaled(d["bbox"], sx, sy)} for d in f["digits"]]}
             for f in fields]
    return faxed, moved, width, height


def _real_digits(cvl_path: Path) -> _Digits:
    """Real writers' digits from a CVL digits file, as written: their strokes keep the
    width and the pressure the writers gave them (thinner than MNIST's, often pale)."""
    from pipeline.measure import read_cvl_ink

    ink, labels = read_cvl_ink(cvl_path)
    peak = np.maximum(ink.reshape(len(ink), -1).max(axis=1), 1.0)[:, None, None]
    return _Digits((ink / peak * 255.0).astype(np.uint8), labels.astype(np.uint8))


def write_samples(mnist_source, out_dir: Path, pages: int, seed: int, dpi: int | None = None,
                  cvl: Path | None = None, fax: bool = False, bilevel: bool = False) -> list[Path]:
    """Write ``pages`` synthetic pages and their truth JSONs into ``out_dir``.

    Forms are ``page_NNN.jpg`` (JPEG at quality 65-85, as scanners save them), cheques
    ``page_NNN.png``, each stating its scan's resolution; truth is ``page_NNN.json``:
    ``{"image", "width", "height", "dpi", "fields": [{"text", "bbox": [x, y, w, h],
    "digits": [{"label", "bbox"}, ...]}]}``. The same seed gives the same pages; ``dpi``
    scans them all at one resolution (the same seed gives the same pages at another size)
    instead of at 150 or 200 dpi. With ``cvl`` (a CVL digits file) the digits are real
    writers' instead of MNIST's: pages for measuring only, never for training or for the
    repository. With ``fax`` every page is sent as a standard-mode fax instead (the same
    page, then ``fax_page``): ``page_NNN.tif``, black and white, Group 4, stating FAX_DPI;
    its truth is on the page as read, stretched to square pixels at 204 dpi. With
    ``bilevel`` every page is scanned black and white instead, as office scanners and
    cheque imaging save documents: the same page made two-tone by Otsu's threshold, a Group
    4 ``page_NNN.tif`` at its scan's resolution, the truth unchanged.
    Returns the image paths.
    """
    if cvl is not None:
        digits = _real_digits(Path(cvl))
    else:
        mnist = load_mnist(mnist_source)
        digits = _Digits(mnist.test_images, mnist.test_labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for number in range(1, pages + 1):
        page_rng = np.random.default_rng(rng.integers(2 ** 63))
        cheque = page_rng.random() < CHEQUE_SHARE
        gray, fields, scan_dpi = make_page(digits, page_rng, cheque=cheque, dpi=dpi)
        height, width = gray.shape
        stated = (scan_dpi, scan_dpi)  # every file states its resolution, as a scanner's does
        if fax:
            gray, fields, width, height = _faxed(gray, fields, scan_dpi)
            stated = FAX_DPI
        elif bilevel:
            gray = _two_tone(gray)
        if fax or bilevel:
            image = Image.fromarray(gray).convert("1")
            suffix, options = "tif", {"format": "TIFF", "compression": "group4"}
        else:
            # Full pages come as JPEG, as scanners save them; cut-down cheques as PNG.
            image = Image.fromarray(gray)
            if cheque:
                suffix, options = "png", {"format": "PNG", "compress_level": 9}
            else:
                suffix, options = "jpg", {"format": "JPEG", "quality": int(page_rng.integers(65, 86))}
        name = f"page_{number:03d}.{suffix}"
        image.save(out_dir / name, dpi=stated, **options)
        truth = {"image": name, "width": int(width), "height": int(height), "dpi": stated[0], "fields": fields}
        (out_dir / name).with_suffix(".json").write_text(json.dumps(truth) + "\n", encoding="utf-8")
        written.append(out_dir / name)
    return written
