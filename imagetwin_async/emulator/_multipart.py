"""Read a scan upload from the multipart stream and enforce the reference's limits.

Files are hashed chunk by chunk as they arrive, so images never sit in memory; a document is
spooled (memory first, then a temporary file) because counting a PDF's pages needs the whole
file. Each limit is checked as soon as the stream shows it is broken, and the 400 names it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import IO

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.hdrs import CONTENT_DISPOSITION
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader, BadContentDispositionParam
from yarl import URL

from .. import _spec
from ._records import UploadedFile

__all__ = [
    "SCAN",
    "SCAN_IMAGES",
    "SCAN_PDF",
    "Upload",
    "UploadRejected",
    "UploadRules",
    "read_upload",
]

_CHUNK = 256 * 1024
_SPOOL_IN_MEMORY = 4 * _spec.MIB  # larger documents spill to a temporary file
_MAX_FIELD = 8 * 1024  # form fields are short; a huge one is an attack, not a minScore
_PAGE_COUNT_IN_THREAD = 1 * _spec.MIB  # parse big PDFs off the event loop
_SIMPLE_DISPOSITION = re.compile(r'form-data; ?name="([^"\\%]*)"(?:; ?filename="([^"\\%]*)")?\Z')
_PAGE_CACHE: dict[tuple[str, str], int | None] = {}  # (sha256, ext) -> pages: uploads repeat
_PAGE_CACHE_SIZE = 1024
# What aiohttp's multipart reader raises on a body that is not well-formed; its warnings about
# a Content-Disposition it cannot parse are raised too where warnings are errors (a test suite).
_MALFORMED = (
    ValueError,
    KeyError,
    AssertionError,
    HttpProcessingError,
    BadContentDispositionHeader,
    BadContentDispositionParam,
)


class UploadRejected(Exception):
    """The upload breaks a documented limit: answer 400 with ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class UploadRules:
    """What one endpoint accepts."""

    file_field: str
    documents: frozenset[str]
    images: frozenset[str]
    options: bool  # minScore, callbackUrl, excludeIdenticalPaper


SCAN = UploadRules("file", _spec.DOCUMENT_EXTENSIONS, _spec.IMAGE_EXTENSIONS, options=True)
SCAN_PDF = UploadRules("pdfFile", frozenset({".pdf"}), frozenset(), options=False)
SCAN_IMAGES = UploadRules("imageFile", frozenset(), _spec.LEGACY_IMAGE_EXTENSIONS, options=False)


@dataclass(slots=True)
class Upload:
    files: list[UploadedFile] = field(default_factory=list)
    min_score: float = _spec.DEFAULT_MIN_SCORE
    callback_url: str | None = None
    exclude_identical_paper: bool = False
    unreadable: bool = False  # a document we could not parse (see Emulator.corrupt_documents)


@dataclass(frozen=True, slots=True)
class _Limits:
    document: int
    image: int
    unit: str

    def show(self, size: int) -> str:
        return f"{size // (_spec.MIB if self.unit == 'MiB' else _spec.MB)} {self.unit}"


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


async def read_upload(
    request: web.Request, rules: UploadRules, *, size_unit: _spec.SizeUnit = "MB"
) -> Upload:
    """Stream the multipart body of a scan request; raise ``UploadRejected`` on any breach.

    ``size_unit`` is how the reference's "under 30 MB / 20 MB" is read (see ``_spec``).
    """
    if not request.content_type.startswith("multipart/"):
        raise UploadRejected(
            "No file provided: the body must be multipart/form-data with "
            f"'{rules.file_field}' parts."
        )
    upload = Upload()
    try:
        limits = _Limits(*_spec.size_limits(size_unit), size_unit)
        await _read_parts(await request.multipart(), rules, upload, limits)
    except _MALFORMED as exc:
        raise UploadRejected(f"Malformed multipart body: {exc}") from None
    if not upload.files:
        raise UploadRejected(f"No file provided: add at least one '{rules.file_field}' part.")
    return upload


def _disposition(part: BodyPartReader) -> tuple[str | None, str | None]:
    """(name, filename): aiohttp parses the header anew for each (~50 us); most are simple."""
    match = _SIMPLE_DISPOSITION.match(part.headers.get(CONTENT_DISPOSITION, ""))
    if match:
        return match.group(1), match.group(2)
    return part.name, part.filename


async def _read_file_part(
    part: BodyPartReader, filename: str | None, rules: UploadRules, upload: Upload, limits: _Limits
) -> None:
    if filename is None:
        raise UploadRejected(f"'{rules.file_field}' must be a file upload with a file name.")
    name = _basename(filename)
    ext = _extension(name)
    documents = sum(f.is_document for f in upload.files)
    images = len(upload.files) - documents
    if ext in rules.documents:
        if documents or images:
            raise UploadRejected(_mix_message(rules))
        upload.files.append(await _read_document(part, name, ext, upload, limits))
    elif ext in rules.images:
        if documents:
            raise UploadRejected(_mix_message(rules))
        if images >= _spec.MAX_IMAGES:
            raise UploadRejected(f"Too many images: at most {_spec.MAX_IMAGES} images per scan.")
        upload.files.append(await _read_image(part, name, limits))
    else:
        allowed = ", ".join(sorted(rules.documents | rules.images))
        raise UploadRejected(
            f"File type '{ext or name}' of '{name}' is not allowed; allowed: {allowed}."
        )


async def _read_parts(
    reader: MultipartReader, rules: UploadRules, upload: Upload, limits: _Limits
) -> None:
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise UploadRejected("Nested multipart bodies are not supported.")
        name, filename = _disposition(part)
        if name == rules.file_field:
            await _read_file_part(part, filename, rules, upload, limits)
        elif rules.options and name in _OPTIONS:
            _OPTIONS[name](upload, await _read_field(part, name))
        # Other fields are ignored, as a tolerant server would; the reader skips them.


def _mix_message(rules: UploadRules) -> str:
    if not rules.images:
        return "Only one PDF file can be scanned per request."
    return (
        "Either one document (.pdf, .docx) or up to "
        f"{_spec.MAX_IMAGES} images can be scanned per request, not both or several documents."
    )


async def _read_field(part: BodyPartReader, name: str) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_MAX_FIELD):
        data += chunk
        if len(data) > _MAX_FIELD:
            raise UploadRejected(f"Form field '{name}' is longer than {_MAX_FIELD} bytes.")
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise UploadRejected(f"Form field '{name}' is not valid text.") from None


async def _read_image(part: BodyPartReader, name: str, limits: _Limits) -> UploadedFile:
    digest = hashlib.sha256()
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size >= limits.image:
            raise UploadRejected(
                f"Image '{name}' is too large: each image must be under "
                f"{limits.show(limits.image)} ({limits.image} bytes)."
            )
        digest.update(chunk)
    return UploadedFile(name, size, digest.hexdigest())


async def _read_document(
    part: BodyPartReader, name: str, ext: str, upload: Upload, limits: _Limits
) -> UploadedFile:
    digest = hashlib.sha256()
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size >= limits.document:
                raise UploadRejected(
                    f"Document '{name}' is too large: it must be under "
                    f"{limits.show(limits.document)} ({limits.document} bytes)."
                )
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        sha256 = digest.hexdigest()
        if (sha256, ext) in _PAGE_CACHE:
            pages = _PAGE_CACHE[sha256, ext]
        else:
            if size > _PAGE_COUNT_IN_THREAD:
                pages = await asyncio.to_thread(_count_pages, spool, ext)
            else:
                pages = _count_pages(spool, ext)
            if len(_PAGE_CACHE) >= _PAGE_CACHE_SIZE:
                _PAGE_CACHE.clear()
            _PAGE_CACHE[sha256, ext] = pages
    if pages is None:
        upload.unreadable = True
    elif pages >= _spec.MAX_DOCUMENT_PAGES:
        raise UploadRejected(
            f"Document '{name}' has {pages} pages: a document must have fewer than "
            f"{_spec.MAX_DOCUMENT_PAGES} pages."
        )
    return UploadedFile(name, size, sha256, pages if pages and pages > 0 else None)


_DOCX_PAGES = re.compile(rb"<(?:\w+:)?Pages>\s*(\d+)\s*</(?:\w+:)?Pages>")


def _count_pages(stream: IO[bytes], ext: str) -> int | None:
    """Pages of a PDF; for a .docx, the count Word saved in docProps/app.xml (0 if absent).

    None means the document could not be read at all.
    """
    if ext == ".pdf":
        from pypdf import PdfReader  # noqa: PLC0415 - pypdf is slow to import; only documents need it

        try:
            return len(PdfReader(stream).pages)
        except Exception:
            return None
    try:
        with zipfile.ZipFile(stream) as docx:
            if "word/document.xml" not in docx.namelist():
                return None
            try:
                app = docx.read("docProps/app.xml")
            except KeyError:
                return 0
    except (zipfile.BadZipFile, OSError):
        return None
    match = _DOCX_PAGES.search(app)
    return int(match.group(1)) if match else 0


def _set_min_score(upload: Upload, value: str) -> None:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    low, high = _spec.MIN_SCORE_RANGE
    if not low <= score <= high:  # also rejects nan
        raise UploadRejected(f"minScore must be a number from {low} to {high}, got {value!r}.")
    upload.min_score = score


def _set_callback_url(upload: Upload, value: str) -> None:
    try:
        url = URL(value.strip())
    except ValueError:
        url = None
    if url is None or url.scheme not in {"http", "https"} or not url.host:
        raise UploadRejected(f"callbackUrl must be an http or https URL, got {value!r}.")
    upload.callback_url = str(url)


def _set_exclude_identical_paper(upload: Upload, value: str) -> None:
    if value not in {"true", "false"}:
        raise UploadRejected(f"excludeIdenticalPaper must be true or false, got {value!r}.")
    upload.exclude_identical_paper = value == "true"


_OPTIONS = {
    "minScore": _set_min_score,
    "callbackUrl": _set_callback_url,
    "excludeIdenticalPaper": _set_exclude_identical_paper,
}
