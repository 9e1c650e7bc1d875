"""The pages the real service serves from app.imagetwin.ai: a PDF report and a result page."""

from __future__ import annotations

import html

from ._state import Scan

__all__ = ["render_pdf_report", "render_result_page"]


def _summary(scan: Scan) -> list[str]:
    f = scan.findings
    lines = [
        "Imagetwin report (emulated)",
        f"Scan ID: {scan.scan_id}",
        f"Scan date (UTC): {scan.scan_date:%Y-%m-%d %H:%M:%S}",
        f"Minimum score: {scan.min_score}",
        f"Alterations: {f.alteration_count}",
        f"Local duplicates: {f.local_duplicate_count}",
        f"External duplicates: {f.extern_duplicate_count}",
        f"AI-generated images: {f.ai_image_count}",
        f"Highest score: {f.highest_score}",
    ]
    lines.extend(f"File: {file.name} ({file.size} bytes)" for file in scan.files)
    return lines


def _pdf_text(line: str) -> str:
    # PDF literal strings escape these three; anything outside Latin-1 becomes "?".
    escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return escaped.encode("latin-1", "replace").decode("latin-1")


def render_pdf_report(scan: Scan) -> bytes:
    """A small, valid one-page PDF (readable by pypdf and any viewer) summarising the scan."""
    text = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
    for line in _summary(scan):
        text.append(f"({_pdf_text(line)}) Tj T*")
    text.append("ET")
    stream = "\n".join(text).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def render_result_page(scan: Scan) -> str:
    """The web interface's result page, reduced to the summary."""
    items = "\n".join(f"    <li>{html.escape(line)}</li>" for line in _summary(scan)[1:])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>Imagetwin result {html.escape(scan.scan_id)}</title></head>\n"
        "<body>\n  <h1>Imagetwin result (emulated)</h1>\n"
        f"  <ul>\n{items}\n  </ul>\n</body>\n</html>\n"
    )
