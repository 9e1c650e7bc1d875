"""Count a document's pages from an open binary file, without reading the whole file.

The API refuses documents with 50 pages or more, and every refused scan still costs a round
trip (and, if the server counted differently, a billed scan), so the client counts first.

    >>> with open("paper.pdf", "rb") as f:
    ...     count_pages(".pdf", f, name="paper.pdf")
    12

Both readers take a file object positioned anywhere and leave its position undefined: the
caller rewinds. Anything unreadable is an ``InvalidUpload`` naming the file.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import IO, TYPE_CHECKING

from ._errors import InvalidUpload

if TYPE_CHECKING:
    import pypdf

__all__ = ["Window", "count_docx_pages", "count_pages", "count_pdf_pages"]

# Acrobat looks for the header in the first 1024 bytes and for %%EOF in the last 1024; we allow
# more slack at the end because some mailers and uploaders append padding after %%EOF.
_HEADER_WINDOW = 1024
_EOF_WINDOW = 64 * 1024
_MAX_APP_XML = 1024 * 1024  # docProps/app.xml is a few KiB; a bigger one is not worth parsing
# A regex, not an XML parser: app.xml is untrusted input, the stdlib's parsers are not hardened
# against entity expansion, and we want one integer. Word writes <Pages>; some producers prefix
# the extended-properties namespace (<ep:Pages>).
_DOCX_PAGES = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?Pages>\s*(\d{1,9})\s*</(?:[A-Za-z_][\w.-]*:)?Pages>"
)


def count_pages(extension: str, file: IO[bytes], *, name: str) -> int | None:
    """The page count of a ``.pdf`` or ``.docx`` (lower-case extension), or None if unknown."""
    if extension == ".pdf":
        return count_pdf_pages(file, name=name)
    if extension == ".docx":
        return count_docx_pages(file, name=name)
    raise ValueError(f"no page counter for {extension!r}")


def count_pdf_pages(file: IO[bytes], *, name: str) -> int | None:
    """The number of pages of the PDF in ``file``, read with pypdf.

    The count is the one the document declares: ``/Count`` of its page tree's root, as PDF
    viewers (pdf.js, PDFium, MuPDF) read it, without parsing every page object (a 49-page
    document costs a sixth of a full walk). The tree is walked instead, page by page, when
    that figure is missing, not a believable whole number, or contradicted by the root's own
    list of kids (more kids than pages declared).

    pypdf reads the cross-reference table and the few objects it needs, not the page
    contents, so memory stays far below the file's size. Two kinds of damage make pypdf read
    the whole file (it rebuilds the cross-reference table from a full scan) or crawl through
    it backwards for seconds; the first, a missing header or ``%%EOF`` marker, we refuse up
    front. The second, a broken table in an otherwise complete file, we let pypdf repair: the
    file is read whole once, which the 30 MiB size check already bounds.

    An encrypted PDF is opened with the empty password, which works for the common kind that
    only restricts permissions; one that needs a password to open is refused, since the
    service cannot open it either. If pypdf lacks the AES backend (``cryptography``) to try,
    the count is unknown (None) and the server decides.
    """
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    if b"%PDF-" not in file.read(_HEADER_WINDOW):
        raise InvalidUpload(f"{name} is not a PDF: no %PDF- header at its start", source=name)
    file.seek(max(0, size - _EOF_WINDOW))
    if b"%%EOF" not in file.read(_EOF_WINDOW):
        raise InvalidUpload(
            f"{name} is a damaged or truncated PDF: no %%EOF marker near its end", source=name
        )
    file.seek(0)
    import pypdf  # noqa: PLC0415 - imported on first use: it is a fifth of the SDK's import time

    try:
        # strict=False: accept the small deviations real-world producers make, as the
        # service's own reader does; the server, not us, is the judge of those.
        reader = pypdf.PdfReader(file, strict=False)
        if reader.is_encrypted and not _open_encrypted(reader, name):
            return None
        pages = _declared_pages(reader)
        if pages is None:
            pages = len(reader.pages)  # pypdf's walk, with its own guards on cycles and depth
    except InvalidUpload:
        raise
    except Exception as exc:  # pypdf raises many types on damaged input, not only PdfReadError
        raise InvalidUpload(f"{name} is not a readable PDF ({exc})", source=name) from exc
    if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
        raise InvalidUpload(f"{name} is not a readable PDF (bad page count)", source=name)
    return pages


# PDFium's bound on a believable /Count (kPageMaxNum); past it, or below 1, the tree is walked.
_MAX_DECLARED_PAGES = 0xFFFFF


def _declared_pages(reader: pypdf.PdfReader) -> int | None:
    """The root page tree node's ``/Count``, or None where it cannot be taken as it stands."""
    from pypdf.generic import ArrayObject, DictionaryObject  # noqa: PLC0415 - see count_pdf_pages

    root = reader.trailer["/Root"]  # pypdf resolves each indirect reference it hands out
    pages = root["/Pages"] if isinstance(root, DictionaryObject) and "/Pages" in root else None
    if not isinstance(pages, DictionaryObject) or "/Kids" not in pages or "/Count" not in pages:
        return None
    declared: object = pages["/Count"]
    kids = pages["/Kids"]
    if (
        isinstance(declared, bool)
        or not isinstance(declared, int)
        or not 0 < declared < _MAX_DECLARED_PAGES
        or not isinstance(kids, ArrayObject)
        or len(kids) > declared  # each kid holds a page at least: the figure is a lie
    ):
        return None
    return int(declared)


def _open_encrypted(reader: pypdf.PdfReader, name: str) -> bool:
    """Decrypt with the empty user password; False if pypdf cannot try (no AES backend)."""
    from pypdf import PasswordType  # noqa: PLC0415 - see count_pdf_pages
    from pypdf.errors import DependencyError  # noqa: PLC0415

    try:
        opened = reader.decrypt("")
    except DependencyError:
        return False
    if opened == PasswordType.NOT_DECRYPTED:
        raise InvalidUpload(
            f"{name} is password-protected: the service could not open it", source=name
        )
    return True


def count_docx_pages(file: IO[bytes], *, name: str) -> int | None:
    """The page count Word cached in ``docProps/app.xml`` (``<Pages>``), or None if absent.

    This is the figure Word stored the last time it saved the file, not a fresh layout: other
    producers (LibreOffice, python-docx, converters) may omit it or leave it stale, and we do
    not paginate a document ourselves. When it is absent the page check is skipped and the
    server decides. A ``.docx`` that is not a ZIP archive is refused.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            try:
                info = archive.getinfo("docProps/app.xml")
            except KeyError:
                return None
            with archive.open(info) as member:
                app_xml = member.read(_MAX_APP_XML)
    except zipfile.BadZipFile as exc:
        raise InvalidUpload(f"{name} is not a .docx file: not a ZIP archive", source=name) from exc
    except Exception as exc:  # zlib.error, NotImplementedError (compression), EOFError, ...
        raise InvalidUpload(f"{name} is not a readable .docx file ({exc})", source=name) from exc
    match = _DOCX_PAGES.search(app_xml)
    return int(match.group(1)) if match else None


class Window(io.RawIOBase):
    """A read-only view of ``size`` bytes of ``file`` starting at ``start``, as if a file.

    Lets pypdf and zipfile, which seek relative to the start and the end of their input, read a
    caller's stream whose content begins mid-stream (``start > 0``).
    """

    def __init__(self, file: IO[bytes], start: int, size: int) -> None:
        super().__init__()
        self._file = file
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        data = self._file.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
