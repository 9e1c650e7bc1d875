"""What a scan uploads: the input types, and the checks made before anything is sent.

``prepare_upload`` turns what a user passes to ``scan`` into a validated ``Upload``, or raises
``InvalidUpload`` naming the file and the limit, before any byte is sent (a refused upload is a
wasted request at best, a billed scan at worst). ``Upload.open_parts`` opens the parts afresh for
each attempt; ``_multipart`` streams them as a multipart body (this module imports no HTTP
library).

    >>> with prepare_upload(["fig1.png", "fig2.tif"]) as upload:
    ...     upload.kind, [part.filename for part in upload.parts]
    ('images', ['fig1.png', 'fig2.tif'])

Sizes follow ``_spec``: the reference's "MB" is read as 10**6 bytes by default (the stricter
reading; ``size_unit="MiB"`` for 2**20), and limits are strict ("under 30 MB" refuses exactly
30 MB).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Literal, Protocol, TypeAlias, runtime_checkable

import attrs

from . import _spec
from ._errors import InvalidArgument, InvalidUpload, UploadChanged
from ._pagecount import Window, count_pages
from ._protocol import LegacyEndpoint

__all__ = [
    "CONTENT_TYPES",
    "FileContent",
    "NamedFile",
    "OpenedPart",
    "Upload",
    "UploadKind",
    "UploadPart",
    "UploadSource",
    "Uploadable",
    "cheap_to_prepare",
    "prepare_upload",
]

UploadKind: TypeAlias = Literal["document", "images"]

CONTENT_TYPES: Mapping[str, str] = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}
"""The Content-Type sent for each accepted extension (``.docx`` has its official OOXML type)."""

_CHUNK = 64 * 1024  # read size when copying a non-seekable stream
_SPOOL_IN_MEMORY = 1024 * 1024  # a spooled stream moves to a temporary file beyond this
_HASH_CHUNK = 256 * 1024
# In memory and at most this big, preparing an upload takes less time than handing it to a
# thread (see cheap_to_prepare).
_INLINE_DOCUMENT_BYTES = 4 * 1024
_INLINE_IMAGE_BYTES = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@attrs.frozen(repr=False)
class FileContent:
    """Content to upload that is not a path on disk: bytes or a binary stream, with a file name.

    Named ``FileContent`` so it never shadows FastAPI's ``UploadFile`` in a user's imports.

        >>> await client.scan(FileContent("paper.pdf", pdf_bytes))
        >>> with open("fig.png", "rb") as f:
        ...     await client.scan([FileContent("fig.png", f)])

    The file name's extension decides how it is checked; only its last path component is sent.
    A seekable stream is read from its current position to its end, and rewound to that
    position for every attempt; the caller keeps ownership and closes it. A non-seekable stream
    (a pipe, a socket) is copied once into a temporary file when the upload is prepared, since
    a retry must send the same bytes again.
    """

    filename: str
    content: bytes | IO[bytes]

    def __repr__(self) -> str:
        what = (
            f"{len(self.content)} bytes"
            if isinstance(self.content, bytes | bytearray | memoryview)
            else type(self.content).__name__
        )
        return f"FileContent(filename={self.filename!r}, content=<{what}>)"


@runtime_checkable
class NamedFile(Protocol):
    """Anything with ``.filename`` and a binary ``.file``: FastAPI's and Starlette's ``UploadFile``.

        >>> @app.post("/check")
        ... async def check(paper: fastapi.UploadFile) -> dict[str, str]:
        ...     started = await client.scan(paper)
        ...     return {"scan_id": started.scan_id}

    ``.file`` is treated like a ``FileContent`` stream: read from its current position, never
    closed by us.
    """

    @property
    def filename(self) -> str | None: ...

    @property
    def file(self) -> IO[bytes]: ...


UploadSource: TypeAlias = str | os.PathLike[str] | FileContent | NamedFile
"""One file: a path (a ``str`` is always a path), a ``FileContent``, or a ``NamedFile``."""
Uploadable: TypeAlias = UploadSource | Sequence[UploadSource]
"""What ``scan`` takes: one document or image, or a sequence of up to 25 images."""


@attrs.frozen
class UploadPart:
    """One validated file of an upload, as the server will receive it.

        >>> part = prepare_upload("paper.pdf").parts[0]
        >>> part.filename, part.size, part.content_type, part.pages
        ('paper.pdf', 1048576, 'application/pdf', 12)

    ``pages`` is the counted page number of a PDF, Word's cached figure for a ``.docx`` (None
    when the file has none), and None for images. ``path`` is None for in-memory or streamed
    content. ``source`` is how errors name the file: the path as given, or the file name.
    """

    filename: str
    size: int
    content_type: str
    pages: int | None
    path: Path | None
    source: str
    _content: _Content = attrs.field(repr=False, eq=False, alias="content")

    @property
    def extension(self) -> str:
        """The lower-case extension, with its dot (``.pdf``)."""
        return PurePosixPath(self.filename).suffix.lower()

    def _open(self) -> OpenedPart:
        return self._content.open(self)


class Upload:
    """A validated upload: one document or up to 25 images, ready to be sent any number of times.

        >>> with prepare_upload("paper.pdf") as upload:
        ...     form = form_data(upload, extra_fields={"minScore": "0.5"})   # _multipart
        ...     await session.post(url, data=form)  # a new form for every attempt

    Build it with ``prepare_upload``. Files on disk are opened afresh by each ``open_parts()``
    call and closed once the attempt is sent; ``close()`` (or leaving the ``with`` block) closes
    whatever is still open, including the temporary copy of a non-seekable stream. After
    ``close()`` nothing more can be opened.
    """

    def __init__(
        self,
        kind: UploadKind,
        parts: tuple[UploadPart, ...],
        *,
        resources: Iterable[IO[bytes]] = (),
    ) -> None:
        self.kind: UploadKind = kind
        self.parts = parts
        self._resources = list(resources)  # spooled copies of non-seekable streams: ours
        self._handles: set[IO[bytes]] = set()  # files opened for attempts and not yet closed
        self._sha256: str | None = None
        self._closed = False

    def __repr__(self) -> str:
        names = ", ".join(part.filename for part in self.parts)
        return f"<Upload {self.kind}: {names} ({self.size} bytes)>"

    @property
    def size(self) -> int:
        """Total bytes of file content (the multipart framing adds a few hundred more)."""
        return sum(part.size for part in self.parts)

    @property
    def closed(self) -> bool:
        return self._closed

    def sha256(self) -> str:
        """Hex SHA-256 of the parts' content in order, for a journal to recognise a re-run.

        Each part contributes its size as 8 big-endian bytes, then its bytes, so two images
        ``ab`` + ``c`` never hash like ``a`` + ``bc``; file names are not hashed (a renamed copy
        is the same scan). Streamed in 256 KiB chunks and cached. Blocking file I/O: from a
        running event loop, call it as ``await asyncio.to_thread(upload.sha256)``.
        """
        if self._sha256 is None:
            self._check_open()
            digest = hashlib.sha256()
            for part in self.parts:
                digest.update(part.size.to_bytes(8, "big"))
                opened = part._open()
                try:
                    opened.file.seek(opened.start)
                    remaining = part.size
                    while remaining:
                        chunk = opened.file.read(min(_HASH_CHUNK, remaining))
                        if not chunk:
                            raise changed_error(part, "shrank")
                        digest.update(chunk)
                        remaining -= len(chunk)
                finally:
                    opened.release()
            self._sha256 = digest.hexdigest()
        return self._sha256

    def open_parts(self) -> list[tuple[UploadPart, OpenedPart]]:
        """Open every part for one attempt, in order; release each ``OpenedPart`` once sent.

        A file deleted or changed since validation raises ``InvalidUpload`` here, before
        anything is sent. Files we open stay tracked until released, so ``close()`` can close
        those of an attempt that never went out.
        """
        self._check_open()
        opened: list[tuple[UploadPart, OpenedPart]] = []
        try:
            for part in self.parts:
                handle = part._open()
                if handle.owned:
                    self._handles.add(handle.file)
                    handle.on_release = self._handles.discard
                opened.append((part, handle))
        except BaseException:
            for _, handle in opened:
                handle.release()
            raise
        return opened

    def close(self) -> None:
        """Close every file this upload opened and discard spooled copies. Idempotent."""
        self._closed = True
        for handle in [*self._handles, *self._resources]:
            handle.close()
        self._handles.clear()
        self._resources.clear()

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this Upload is closed: prepare a new one to send it again")


def prepare_upload(
    files: Uploadable,
    *,
    legacy: LegacyEndpoint | None = None,
    size_unit: _spec.SizeUnit = "MB",
) -> Upload:
    """Check ``files`` against the API's limits and return an ``Upload``; nothing is sent.

        >>> upload = prepare_upload("paper.pdf")
        >>> upload.kind, upload.parts[0].pages
        ('document', 12)

    ``files`` is one document (.pdf, .docx) or image, or a sequence of up to 25 images (a
    sequence holding a single document is that document). ``legacy`` applies the deprecated
    endpoints' narrower rules: ``"scanPdf"`` takes one PDF, ``"scanImages"`` no ``.webp``.

    ``size_unit`` reads the reference's "MB": ``"MB"`` (10**6 bytes, default: nothing a strict
    server could refuse after the upload) or ``"MiB"`` (2**20 bytes).

    Raises ``InvalidUpload`` (a ``ValueError``) for anything the API would refuse: a missing,
    unreadable or empty file, a directory, an unaccepted extension, a document of 30 MB or
    more or with 50 pages or more, an image of 20 MB or more, more than 25 images, a document
    mixed with anything else, or an empty sequence.

    Does blocking file I/O (stat, a page count that reads a PDF's cross-reference table, and a
    copy of any non-seekable stream): from a busy event loop, run it in a thread.
    """
    if legacy not in (None, "scanPdf", "scanImages"):
        raise InvalidArgument(f"legacy must be 'scanPdf', 'scanImages' or None, got {legacy!r}")
    if size_unit not in ("MB", "MiB"):
        raise InvalidArgument(f"size_unit must be 'MB' or 'MiB', got {size_unit!r}")
    limits = _spec.size_limits(size_unit)
    candidates = [_candidate(item, limits, size_unit) for item in _items(files)]
    kind = _check_composition(candidates, legacy)
    resources: list[IO[bytes]] = []
    try:
        parts = tuple(_resolve(candidate, resources) for candidate in candidates)
    except BaseException:
        for resource in resources:
            resource.close()
        raise
    return Upload(kind, parts, resources=resources)


def cheap_to_prepare(files: object) -> bool:
    """Whether ``prepare_upload(files)`` is quick enough to run on the event loop itself.

    True for content already in memory (``FileContent`` of bytes: no disk, no stream to copy)
    that is small: a document of at most 4 KiB, whose page count parses a handful of objects
    (under 3 ms for the worst such file we could craft), or images of at most 1 MiB in all,
    checked by name and size alone. Handing such work to a thread costs more CPU than the
    work (100-200 us a hop with requests in flight). Anything else goes to a thread. Pure:
    looks at types and lengths only, and never raises (``prepare_upload`` judges the rest).
    """
    items: Sequence[object]
    if isinstance(files, FileContent):
        items = [files]
    elif isinstance(files, list | tuple):
        items = files
    else:
        return False
    total = 0
    documents = 0
    for item in items:
        if not isinstance(item, FileContent) or not isinstance(item.filename, str):
            return False
        content = item.content
        if not isinstance(content, bytes | bytearray | memoryview):
            return False
        total += len(content)
        if PurePosixPath(item.filename).suffix.lower() in _spec.DOCUMENT_EXTENSIONS:
            documents += 1
    return total <= (_INLINE_DOCUMENT_BYTES if documents else _INLINE_IMAGE_BYTES)


# --- turning the caller's arguments into named candidates (no I/O) ---------------------------


@attrs.frozen
class _Candidate:
    source: str  # how errors name it
    filename: str  # what the server is told
    extension: str
    is_document: bool
    origin: object
    limit: int  # bytes, exclusive
    unit: str


def _items(files: object) -> list[object]:
    if _is_single(files):
        return [files]
    # bytes are a Sequence too (of ints): refuse them before treating files as a sequence.
    if isinstance(files, Sequence) and not isinstance(files, bytes | bytearray | memoryview):
        items = list(files)
        if not items:
            raise InvalidUpload("nothing to upload: the sequence of files is empty")
        for item in items:
            if not _is_single(item):
                raise _unsupported(item, in_sequence=True)
        return items
    raise _unsupported(files, in_sequence=False)


def _is_single(item: object) -> bool:
    # str before Sequence: a str is a path, never a sequence of one-character file names.
    return isinstance(item, str | os.PathLike | FileContent) or _is_named_file(item)


def _is_named_file(item: object) -> bool:
    return not isinstance(item, str | bytes) and isinstance(item, NamedFile)


def _unsupported(item: object, *, in_sequence: bool) -> InvalidUpload:
    kind = type(item).__name__
    if isinstance(item, bytes | bytearray | memoryview):
        hint = "raw bytes have no file name: pass FileContent('name.pdf', data)"
    elif hasattr(item, "read"):
        hint = f"a bare {kind} has no file name to go by: pass FileContent('name.pdf', stream)"
    elif in_sequence and isinstance(item, Sequence):
        hint = "sequences do not nest: one scan is one document or a flat list of images"
    else:
        hint = f"got {kind}"
    return InvalidUpload(
        "expected a path, a FileContent, an object with .filename and .file (such as FastAPI's"
        f" UploadFile), or a sequence of them; {hint}"
    )


def _candidate(item: object, limits: tuple[int, int], unit: str) -> _Candidate:
    if isinstance(item, str | os.PathLike):
        source = os.fsdecode(item)
        if not source:
            raise InvalidUpload("an empty path is not a file")
        filename = Path(source).name
    elif isinstance(item, FileContent):
        source = filename = _clean_name(item.filename)
    else:
        assert isinstance(item, NamedFile)
        source = filename = _clean_name(item.filename)
    if _CONTROL.search(filename):
        raise InvalidUpload(f"{source!r}: control characters in a file name", source=source)
    extension = PurePosixPath(filename).suffix.lower()
    is_document = extension in _spec.DOCUMENT_EXTENSIONS
    if not is_document and extension not in _spec.IMAGE_EXTENSIONS:
        if isinstance(item, str | os.PathLike) and os.path.isdir(source):
            raise InvalidUpload(f"{source} is a directory, not a file", source=source)
        what = f"{extension} files" if extension else "a file without an extension"
        raise InvalidUpload(
            f"{source}: {what} cannot be scanned; documents:"
            f" {_listing(_spec.DOCUMENT_EXTENSIONS)}; images: {_listing(_spec.IMAGE_EXTENSIONS)}",
            source=source,
        )
    limit = limits[0] if is_document else limits[1]
    return _Candidate(source, filename, extension, is_document, item, limit, unit)


def _clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidUpload(f"an upload needs a file name, got {name!r}")
    # Browsers once sent full client paths (C:\Users\...\paper.pdf); send the last component.
    base = re.split(r"[\\/]", name)[-1].strip()
    if not base:
        raise InvalidUpload(f"an upload needs a file name, got {name!r}", source=name)
    return base


def _check_composition(candidates: list[_Candidate], legacy: LegacyEndpoint | None) -> UploadKind:
    documents = [c for c in candidates if c.is_document]
    images = [c for c in candidates if not c.is_document]
    if documents and images:
        raise InvalidUpload(
            f"one scan is either one document or images: {documents[0].source} cannot go with"
            f" {images[0].source}; scan them separately",
            source=documents[0].source,
        )
    if len(documents) > 1:
        raise InvalidUpload(
            f"one scan takes one document, got {len(documents)}:"
            f" {', '.join(d.source for d in documents[:3])}{'...' if len(documents) > 3 else ''}",
            source=documents[1].source,
        )
    if len(images) > _spec.MAX_IMAGES:
        raise InvalidUpload(
            f"one scan takes up to {_spec.MAX_IMAGES} images, got {len(images)}: split them"
        )
    if legacy == "scanPdf":
        for c in candidates:
            if c.extension != ".pdf":
                raise InvalidUpload(
                    f"{c.source}: the deprecated scanPdf endpoint takes one .pdf file only",
                    source=c.source,
                )
    elif legacy == "scanImages":
        for c in candidates:
            if c.extension not in _spec.LEGACY_IMAGE_EXTENSIONS:
                raise InvalidUpload(
                    f"{c.source}: the deprecated scanImages endpoint takes images of"
                    f" {_listing(_spec.LEGACY_IMAGE_EXTENSIONS)} only",
                    source=c.source,
                )
    return "document" if documents else "images"


def _listing(extensions: Iterable[str]) -> str:
    return ", ".join(sorted(extensions))


# --- checking each file (I/O) ----------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading; one seam, so tests can simulate an unreadable file as root."""
    return path.open("rb")


def _resolve(candidate: _Candidate, resources: list[IO[bytes]]) -> UploadPart:
    origin = candidate.origin
    if isinstance(origin, str | os.PathLike):
        return _resolve_path(candidate, Path(candidate.source))
    if isinstance(origin, FileContent):
        content = origin.content
    else:
        assert isinstance(origin, NamedFile)
        content = origin.file
    if isinstance(content, bytes | bytearray | memoryview):
        data = bytes(content)  # a bytearray could change between attempts: freeze a copy
        _check_size(candidate, len(data))
        pages = _pages(candidate, io.BytesIO(data)) if candidate.is_document else None
        return _part(candidate, len(data), pages, None, _BytesContent(data))
    if not callable(getattr(content, "read", None)):
        raise InvalidUpload(
            f"{candidate.source}: content must be bytes or a binary stream,"
            f" got {type(content).__name__}",
            source=candidate.source,
        )
    return _resolve_stream(candidate, content, resources)


def _resolve_path(candidate: _Candidate, path: Path) -> UploadPart:
    source = candidate.source
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidUpload(f"{source}: no such file", source=source) from None
    except OSError as exc:
        raise InvalidUpload(f"{source}: cannot be read ({exc.strerror})", source=source) from exc
    if stat.S_ISDIR(info.st_mode):
        raise InvalidUpload(f"{source} is a directory, not a file", source=source)
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device can be read once only, and a retry must send the same bytes.
        raise InvalidUpload(f"{source} is not a regular file", source=source)
    _check_size(candidate, info.st_size)
    try:
        handle = _open_binary(path)
    except PermissionError:
        raise InvalidUpload(
            f"{source} is not readable (permission denied)", source=source
        ) from None
    except OSError as exc:
        raise InvalidUpload(f"{source}: cannot be read ({exc.strerror})", source=source) from exc
    with handle:
        pages = _pages(candidate, handle) if candidate.is_document else None
    return _part(candidate, info.st_size, pages, path, _PathContent(path, info.st_mtime_ns))


def _resolve_stream(
    candidate: _Candidate, stream: IO[bytes], resources: list[IO[bytes]]
) -> UploadPart:
    source = candidate.source
    if isinstance(stream, io.TextIOBase):
        raise InvalidUpload(f"{source}: a text stream; open the file in binary mode", source=source)
    if getattr(stream, "closed", False):
        raise InvalidUpload(f"{source}: the stream is closed", source=source)
    try:
        seekable = stream.seekable()
        start = stream.tell() if seekable else 0
    except (AttributeError, OSError, ValueError):
        seekable = False
    if not seekable:
        stream, start = _spool(candidate, stream), 0
        resources.append(stream)
    stream.seek(0, os.SEEK_END)
    size = stream.tell() - start
    stream.seek(start)
    _check_size(candidate, size)
    if candidate.is_document:
        try:
            pages = _pages(candidate, io.BufferedReader(Window(stream, start, size)))
        finally:
            stream.seek(start)
    else:
        pages = None
    return _part(candidate, size, pages, None, _StreamContent(stream, start))


def _spool(candidate: _Candidate, stream: IO[bytes]) -> IO[bytes]:
    """Copy a non-seekable stream into a temporary file, stopping as soon as it is too big."""
    # Not a with-block: the spool outlives this function, and Upload.close() closes it.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        _copy_within_limit(candidate, stream, spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _copy_within_limit(candidate: _Candidate, stream: IO[bytes], spool: IO[bytes]) -> None:
    limit = _limit(candidate)
    copied = 0
    while copied < limit:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return
        if not isinstance(chunk, bytes | bytearray):
            raise InvalidUpload(
                f"{candidate.source}: the stream gave {type(chunk).__name__}, not bytes",
                source=candidate.source,
            )
        spool.write(chunk)
        copied += len(chunk)
    what = "a document" if candidate.is_document else "each image"
    raise InvalidUpload(
        f"{candidate.source}: the stream holds at least {_human(copied, candidate.unit)};"
        f" {what} must be under {_human(limit, candidate.unit)} ({limit} bytes)",
        source=candidate.source,
    )


def _limit(candidate: _Candidate) -> int:
    return candidate.limit


def _check_size(candidate: _Candidate, size: int) -> None:
    source = candidate.source
    if size == 0:
        raise InvalidUpload(
            f"{source} is empty (a stream is read from its current position)", source=source
        )
    limit = _limit(candidate)
    if size >= limit:
        what = "a document" if candidate.is_document else "each image"
        raise InvalidUpload(
            f"{source} is {_human(size, candidate.unit)}; {what} must be under"
            f" {_human(limit, candidate.unit)} ({limit} bytes, the reference's MB read as"
            f" {candidate.unit})",
            source=source,
        )


def _human(size: int, unit: str) -> str:
    factor = _spec.MIB if unit == "MiB" else _spec.MB
    return f"{size / factor:.2f} {unit}" if size >= factor // 10 else f"{size} bytes"


def _pages(candidate: _Candidate, file: IO[bytes]) -> int | None:
    pages = count_pages(candidate.extension, file, name=candidate.source)
    if pages is not None and pages >= _spec.MAX_DOCUMENT_PAGES:
        raise InvalidUpload(
            f"{candidate.source} has {pages} pages; a document must have fewer than"
            f" {_spec.MAX_DOCUMENT_PAGES}",
            source=candidate.source,
        )
    if pages == 0:
        raise InvalidUpload(f"{candidate.source} has no pages", source=candidate.source)
    return pages


def _part(
    candidate: _Candidate, size: int, pages: int | None, path: Path | None, content: _Content
) -> UploadPart:
    return UploadPart(
        filename=candidate.filename,
        size=size,
        content_type=CONTENT_TYPES[candidate.extension],
        pages=pages,
        path=path,
        source=candidate.source,
        content=content,
    )


def changed_error(part: UploadPart, how: str) -> UploadChanged:
    """The error for a part whose file changed between validation and the end of its upload."""
    return UploadChanged(
        f"{part.source} {how} since it was checked; it was not sent whole, so no scan "
        "started from it: scan it again once it is no longer being written",
        source=part.source,
    )


# --- content: where each attempt reads a part's bytes from ----------------------------------


def _ignore(_: IO[bytes]) -> None:
    return None


@attrs.define
class OpenedPart:
    """A file to read one part from, at ``start``; ``owned`` if we opened it and must close it.

    ``on_release`` hears of the release (the ``Upload`` stops tracking the file); ``verify``
    raises ``UploadChanged`` if a file on disk changed since it was checked (its size or
    modification time), and is called again before the last bytes of each part go out.
    """

    file: IO[bytes]
    start: int
    owned: bool
    on_release: Callable[[IO[bytes]], None] = attrs.field(default=_ignore, kw_only=True)
    # Raises UploadChanged if the file is no longer what was checked (files on disk only).
    verify: Callable[[], None] = attrs.field(default=lambda: None, kw_only=True)

    def release(self) -> None:
        """Close what we opened; rewind a caller's stream to where we found it."""
        self.on_release(self.file)
        if self.owned:
            self.file.close()
        elif not getattr(self.file, "closed", False):
            self.file.seek(self.start)


class _Content(ABC):
    @abstractmethod
    def open(self, part: UploadPart) -> OpenedPart: ...


@attrs.frozen
class _PathContent(_Content):
    path: Path
    mtime_ns: int  # when it was checked: a rewrite of the same size changes it

    def open(self, part: UploadPart) -> OpenedPart:
        try:
            handle = _open_binary(self.path)
        except OSError as exc:
            raise InvalidUpload(
                f"{part.source} can no longer be read ({exc.strerror})", source=part.source
            ) from exc
        try:
            self._check(part, handle)
        except BaseException:
            handle.close()
            raise
        return OpenedPart(handle, 0, owned=True, verify=lambda: self._check(part, handle))

    def _check(self, part: UploadPart, handle: IO[bytes]) -> None:
        info = os.fstat(handle.fileno())
        if info.st_size != part.size:
            raise changed_error(part, f"changed size ({part.size} -> {info.st_size} bytes)")
        if info.st_mtime_ns != self.mtime_ns:
            raise changed_error(part, "was rewritten")


@attrs.frozen
class _BytesContent(_Content):
    data: bytes = attrs.field(repr=False)

    def open(self, part: UploadPart) -> OpenedPart:
        # BytesIO over a bytes object shares its buffer: no copy.
        return OpenedPart(io.BytesIO(self.data), 0, owned=True)


@attrs.frozen
class _StreamContent(_Content):
    stream: IO[bytes]
    start: int

    def open(self, part: UploadPart) -> OpenedPart:
        if getattr(self.stream, "closed", False):
            raise InvalidUpload(f"{part.source}: the stream was closed", source=part.source)
        return OpenedPart(self.stream, self.start, owned=False)
