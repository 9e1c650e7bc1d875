"""Write the sample documents in ``imagetwin_async/samples/``, shipped in the wheel (reproducible).

    python examples/make_samples.py

Small, made-up "papers" to try ``imagetwin scan --emulator --samples`` with: PDFs of a
few pages with simple figures (raster images embedded as XObjects and vector charts) and a
folder of PNG figures. Only pypdf (a dependency of the SDK) and the standard library are used,
and the bytes are the same on every run, so the emulator's content-derived findings are too.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    StreamObject,
)

SAMPLES = Path(__file__).resolve().parent.parent / "imagetwin_async" / "samples"
Pixel = tuple[int, int, int]
Painter = Callable[[int, int], Pixel]


# ---- pictures: a function from (x, y) to an RGB pixel --------------------------------------


def gel(lanes: int, seed: int) -> Painter:
    """A western-blot-like gel: dark bands on a light background, one column per lane."""

    def paint(x: int, y: int) -> Pixel:
        lane, within = divmod(x, 16)
        if within < 3 or lane >= lanes:
            return (236, 236, 236)
        for band in range(3):
            centre = 10 + ((lane * 7 + band * 13 + seed) % 40)
            if abs(y - centre) < 2:
                shade = 40 + ((lane + band + seed) * 29) % 90
                return (shade, shade, shade)
        return (225, 225, 225)

    return paint


def cells(seed: int) -> Painter:
    """Fluorescence-microscopy-like blobs: green discs on black."""
    centres = [((seed * 37 + i * 23) % 60, (seed * 53 + i * 31) % 60) for i in range(9)]

    def paint(x: int, y: int) -> Pixel:
        for cx, cy in centres:
            d2 = (x - cx) ** 2 + (y - cy) ** 2
            if d2 < 30:
                return (20, 230 - 4 * d2, 40)
        return (5, 10, 5)

    return paint


def pixels(width: int, height: int, paint: Painter) -> list[bytes]:
    return [bytes(v for x in range(width) for v in paint(x, y)) for y in range(height)]


# ---- PNG ----------------------------------------------------------------------------------


def png(width: int, height: int, paint: Painter) -> bytes:
    """An 8-bit RGB PNG, written by hand (signature, IHDR, one IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + row for row in pixels(width, height, paint))  # filter 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# ---- PDF ----------------------------------------------------------------------------------


def image_xobject(width: int, height: int, paint: Painter) -> StreamObject:
    image = StreamObject()
    image._data = zlib.compress(b"".join(pixels(width, height, paint)), 9)
    image.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Image"),
            NameObject("/Width"): NumberObject(width),
            NameObject("/Height"): NumberObject(height),
            NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
            NameObject("/BitsPerComponent"): NumberObject(8),
            NameObject("/Filter"): NameObject("/FlateDecode"),
        }
    )
    return image


def text(x: float, y: float, size: float, line: str) -> str:
    escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"BT /F1 {size} Tf {x} {y} Td ({escaped}) Tj ET\n"


def bar_chart(x: float, y: float, values: list[int]) -> str:
    """A vector bar chart: axes and one filled rectangle per value."""
    ops = f"0 0 0 RG 1 w {x} {y} m {x} {y + 120} l S {x} {y} m {x + 200} {y} l S\n"
    for i, value in enumerate(values):
        grey = 0.2 + 0.6 * (i % 2)
        ops += f"{grey} 0.3 0.7 rg {x + 10 + i * 30} {y} 20 {value} re f\n"
    return ops


def document(
    path: Path, title: str, pages: list[tuple[str, dict[str, StreamObject]]], *, revision: int = 1
) -> None:
    """A PDF of A5 pages; each page is (content stream, images it draws by name).

    The emulator derives findings from a hash of the bytes, so ``revision`` (kept in the
    metadata) was picked per sample to give the demo both clean and flagged papers.
    """
    writer = PdfWriter()
    writer.add_metadata(
        {
            "/Title": title,
            "/Subject": f"revision {revision}",
            "/Producer": "imagetwin_async examples/make_samples.py",
        }
    )
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for number, (content, images) in enumerate(pages, start=1):
        page = writer.add_blank_page(width=420, height=595)
        footer = text(190, 30, 9, f"- {number} -")
        stream = DecodedStreamObject()
        stream.set_data((content + footer).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        resources = DictionaryObject(
            {
                NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref}),
                NameObject("/ProcSet"): ArrayObject([NameObject("/PDF"), NameObject("/Text")]),
            }
        )
        if images:
            resources[NameObject("/XObject")] = DictionaryObject(
                {NameObject(f"/{name}"): writer._add_object(img) for name, img in images.items()}
            )
        page[NameObject("/Resources")] = resources
    writer.compress_identical_objects()
    with path.open("wb") as out:
        writer.write(out)


def draw(name: str, x: float, y: float, width: float, height: float) -> str:
    return f"q {width} 0 0 {height} {x} {y} cm /{name} Do Q\n"


def main() -> None:
    SAMPLES.mkdir(exist_ok=True)
    figures = SAMPLES / "figures"
    figures.mkdir(exist_ok=True)

    blot = image_xobject(96, 60, gel(6, seed=1))
    blot_b = image_xobject(96, 60, gel(6, seed=5))
    document(
        SAMPLES / "western-blot-study.pdf",
        "Protein expression under stress (sample)",
        [
            (
                text(40, 540, 16, "Protein expression under stress")
                + text(40, 515, 10, "A made-up paper for trying imagetwin.")
                + draw("Blot", 40, 330, 320, 160)
                + text(40, 310, 9, "Figure 1. Western blot, lanes 1-6."),
                {"Blot": blot},
            ),
            (
                text(40, 540, 12, "Replicate")
                + draw("Blot", 40, 330, 320, 160)  # the same figure again: a duplicate
                + draw("BlotB", 40, 120, 320, 160)
                + text(40, 100, 9, "Figure 2. Replicates (top reuses Figure 1)."),
                {"Blot": blot, "BlotB": blot_b},
            ),
        ],
        revision=6,  # flagged: four findings, the highest 0.97
    )

    document(
        SAMPLES / "cell-counts.pdf",
        "Cell counts after treatment (sample)",
        [
            (
                text(40, 540, 16, "Cell counts after treatment")
                + bar_chart(60, 360, [40, 75, 110, 60, 95])
                + text(40, 330, 9, "Figure 1. Counts per condition."),
                {},
            ),
            (
                bar_chart(60, 360, [30, 50, 20, 105, 80]) + text(40, 330, 9, "Figure 2. Controls."),
                {},
            ),
            (text(40, 540, 12, "Methods") + text(40, 520, 10, "Nothing to see here."), {}),
        ],
        revision=8,  # clean
    )

    document(
        SAMPLES / "microscopy-report.pdf",
        "Fluorescence microscopy (sample)",
        [
            (
                text(40, 540, 16, "Fluorescence microscopy")
                + draw("Cells", 40, 250, 250, 250)
                + text(40, 230, 9, "Figure 1. Stained cells."),
                {"Cells": image_xobject(60, 60, cells(seed=3))},
            ),
            (
                draw("Cells2", 40, 250, 250, 250) + text(40, 230, 9, "Figure 2. Control."),
                {"Cells2": image_xobject(60, 60, cells(seed=8))},
            ),
        ],
        revision=5,  # two weak findings (highest 0.38): clean with --min-score 0.5
    )

    (figures / "fig1-gel.png").write_bytes(png(96, 60, gel(5, seed=2)))
    (figures / "fig2-cells.png").write_bytes(png(60, 60, cells(seed=4)))
    (figures / "fig3-cells.png").write_bytes(png(60, 60, cells(seed=11)))

    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    for path in sorted(SAMPLES.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(SAMPLES.parent)}  {path.stat().st_size:>7,} bytes")
    print(f"total {total:,} bytes")


if __name__ == "__main__":
    main()
