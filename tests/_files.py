"""Real sample files for tests: PDFs with N pages, tiny valid images, minimal .docx archives.

Every writer can pad a file to an exact ``size`` without writing it: the padding is a hole made
by seeking past it (``truncate`` semantics), so a 30 MiB boundary test costs a few KiB of disk
and no memory. The padding goes where each format ignores it:

- PDF: between the document and a repeated ``startxref``/``%%EOF`` trailer (readers start from
  the last trailer, which points back at the real cross-reference table);
- DOCX: before the ZIP archive (readers find a ZIP from its end, as with self-extractors);
- images: after the image data (decoders stop at the end marker).

    >>> write_pdf(tmp_path / "paper.pdf", pages=49, size=30 * MIB - 1)
    >>> write_image(tmp_path / "fig.png", size=20 * MIB)
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

from pypdf import PdfWriter

MIB = 1024 * 1024

__all__ = [
    "MIB",
    "docx_bytes",
    "gif_bytes",
    "image_bytes",
    "jpeg_bytes",
    "pdf_bytes",
    "png_bytes",
    "sparse_file",
    "write_docx",
    "write_image",
    "write_pdf",
]


@functools.cache
def pdf_bytes(pages: int = 1) -> bytes:
    """A valid PDF with ``pages`` blank pages (cached: building 50 pages takes milliseconds)."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def padded_pdf(pages: int, size: int) -> tuple[bytes, bytes, int]:
    """The head and tail of a ``size``-byte PDF: write head at 0, tail at ``size - len(tail)``."""
    data = pdf_bytes(pages)
    trailer = data[data.rindex(b"startxref") :]
    tail = b"\n" + trailer
    if size < len(data) + len(tail):
        raise ValueError(f"a {pages}-page PDF needs at least {len(data) + len(tail)} bytes")
    return data, tail, size - len(tail)


def write_pdf(path: Path, pages: int = 1, *, size: int | None = None) -> Path:
    """Write a real ``pages``-page PDF, padded (sparsely) to exactly ``size`` bytes if given."""
    if size is None:
        path.write_bytes(pdf_bytes(pages))
        return path
    head, tail, tail_at = padded_pdf(pages, size)
    with path.open("wb") as out:
        out.write(head)
        out.seek(tail_at)
        out.write(tail)
    assert path.stat().st_size == size
    return path


@functools.cache
def png_bytes(seed: int = 0) -> bytes:
    """A valid 1x1 RGB PNG whose pixel depends on ``seed`` (distinct content, distinct hash)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"\x00" + bytes([seed % 256, (seed // 256) % 256, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@functools.cache
def jpeg_bytes(seed: int = 0) -> bytes:
    """A valid baseline 1x1 grey JPEG (a comment segment carries ``seed`` for distinct bytes).

    Built by hand: one-symbol Huffman tables, one 8x8 block whose DC difference and AC run are
    both "nothing" (two zero bits, padded with ones).
    """

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            segment(0xFE, f"seed {seed}".encode()),
            segment(0xDB, b"\x00" + b"\x01" * 64),  # quantisation table 0: all ones
            segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00"),  # 8-bit, 1x1, 1 component
            segment(0xC4, b"\x00" + one_code),  # DC table 0
            segment(0xC4, b"\x10" + one_code),  # AC table 0
            segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # scan: component 1, tables 0/0
            b"\x3f",  # DC "no change", AC end-of-block, padded with 1 bits
            b"\xff\xd9",  # EOI
        ]
    )


@functools.cache
def gif_bytes(seed: int = 0) -> bytes:
    """A valid 1x1 GIF89a whose single palette colour depends on ``seed``."""
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00"
        + bytes([seed % 256, 0, 0])
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


def image_bytes(extension: str, seed: int = 0) -> bytes:
    """Small bytes that suit ``extension``: a real PNG, JPEG or GIF, an SVG, else PNG bytes.

    The SDK does not decode images (the server does), so formats without a generator here
    (.bmp, .tif, .webp) get PNG bytes: what matters to the tests is name, size and content.
    """
    extension = extension.lower()
    if extension in {".jpg", ".jpeg", ".jfif"}:
        return jpeg_bytes(seed)
    if extension == ".gif":
        return gif_bytes(seed)
    if extension == ".svg":
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><!-- {seed} --></svg>'
        ).encode()
    return png_bytes(seed)


def write_image(path: Path, *, size: int | None = None, seed: int = 0) -> Path:
    """Write a tiny image suiting ``path``'s extension, padded (sparsely) to ``size`` bytes."""
    return sparse_file(path, size, head=image_bytes(path.suffix, seed))


@functools.cache
def docx_bytes(pages: int | None = 1, *, zip_ok: bool = True) -> bytes:
    """A minimal Word document; ``docProps/app.xml`` says ``<Pages>pages</Pages>`` unless None.

    ``zip_ok=False`` gives bytes that are not a ZIP archive at all.
    """
    if not zip_ok:
        return b"This is not a ZIP archive, whatever its name says.\n"
    app = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
        'extended-properties"><Application>Microsoft Office Word</Application>'
        + (f"<Pages>{pages}</Pages>" if pages is not None else "")
        + "<Words>1</Words></Properties>"
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.extended-properties+xml"/></Types>'
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/extended-properties" Target="docProps/app.xml"/></Relationships>'
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>Figure 1</w:t></w:r></w:p></w:body></w:document>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", rels)
        archive.writestr("word/document.xml", document)
        archive.writestr("docProps/app.xml", app)
    return out.getvalue()


def write_docx(
    path: Path, pages: int | None = 1, *, size: int | None = None, zip_ok: bool = True
) -> Path:
    """Write a minimal .docx (see ``docx_bytes``), padded (sparsely, in front) to ``size``."""
    data = docx_bytes(pages, zip_ok=zip_ok)
    if size is None:
        path.write_bytes(data)
        return path
    if size < len(data):
        raise ValueError(f"this .docx needs at least {len(data)} bytes")
    with path.open("wb") as out:
        out.seek(size - len(data))
        out.write(data)
    assert path.stat().st_size == size
    return path


def sparse_file(path: Path, size: int | None, *, head: bytes = b"") -> Path:
    """Write ``head`` then extend the file with a hole to exactly ``size`` bytes (if given)."""
    with path.open("wb") as out:
        out.write(head)
        if size is not None:
            if size < len(head):
                raise ValueError(f"size {size} is smaller than the {len(head)}-byte head")
            out.truncate(size)
    return path
