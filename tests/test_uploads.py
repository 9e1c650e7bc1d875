"""Uploads: every check made before sending, page counts, size boundaries, streamed bodies."""

from __future__ import annotations

import gc
import hashlib
import io
import math
import os
import tempfile
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastapi import FastAPI
from fastapi import UploadFile as FastAPIUploadFile
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter
from starlette.datastructures import UploadFile

from imagetwin_async import _spec, _uploads
from imagetwin_async._errors import InvalidArgument, InvalidUpload
from imagetwin_async._multipart import form_data
from imagetwin_async._protocol import validate_min_score
from imagetwin_async._uploads import (
    CONTENT_TYPES,
    FileContent,
    Upload,
    prepare_upload,
)

from ._files import (
    MIB,
    docx_bytes,
    image_bytes,
    jpeg_bytes,
    pdf_bytes,
    png_bytes,
    sparse_file,
    write_docx,
    write_image,
    write_pdf,
)
from ._render import render_body, write_body
from .test_pagecount import flat

DOC_MAX = _spec.MAX_DOCUMENT_BYTES
IMG_MAX = _spec.MAX_IMAGE_BYTES


def starlette_upload(data: bytes, filename: str | None = "paper.pdf") -> UploadFile:
    """What FastAPI hands a route: an UploadFile over a SpooledTemporaryFile, rewound."""
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 (UploadFile owns it)
    spool.write(data)
    spool.seek(0)
    return UploadFile(file=spool, filename=filename)  # type: ignore[arg-type]


class Unseekable(io.RawIOBase):
    """A pipe-like stream: read once, no seek, no tell."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self._data = data
        self._pos = 0
        self._chunk = chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self._data[self._pos : self._pos + min(len(buffer), self._chunk)]
        buffer[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


class Zeros(io.RawIOBase):
    """An endless non-seekable stream of zero bytes: spooling must stop at the limit."""

    read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        buffer[:] = bytes(len(buffer))
        self.read_so_far += len(buffer)
        return len(buffer)


# --- each check: bad input -> the message ---------------------------------------------------

Build = Callable[[Path], tuple[Any, dict[str, Any]]]


def _one(make: Callable[[Path], Any], **kwargs: Any) -> Build:
    return lambda tmp: (make(tmp), kwargs)


def _closed_stream(tmp: Path) -> FileContent:
    stream = io.BytesIO(png_bytes())
    stream.close()
    return FileContent("fig.png", stream)


def _directory_named_pdf(tmp: Path) -> Path:
    (tmp / "dir.pdf").mkdir()
    return tmp / "dir.pdf"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "p.png")
    return tmp / "p.png"


def _at_eof(tmp: Path) -> FileContent:
    stream = io.BytesIO(png_bytes())
    stream.read()
    return FileContent("fig.png", stream)


BAD: list[tuple[str, Build, str, str | None]] = [
    # (id, build, message regex, expected .source ("*" = any, None = none))
    ("missing", _one(lambda t: t / "nope.pdf"), r"nope\.pdf: no such file", "*"),
    ("missing-str", _one(lambda t: str(t / "ab.png")), r"ab\.png: no such file", "*"),
    ("directory", _one(lambda t: t), r"is a directory", "*"),
    (
        "directory-named-pdf",
        _one(_directory_named_pdf),
        r"dir\.pdf is a directory",
        "*",
    ),
    ("fifo", _one(_fifo), r"not a regular file", "*"),
    (
        "extension",
        _one(lambda t: sparse_file(t / "notes.txt", 10)),
        r"notes\.txt: \.txt files cannot be scanned; documents: \.docx, \.pdf; images: \.bmp",
        "*",
    ),
    (
        "no-extension",
        _one(lambda t: sparse_file(t / "README", 10)),
        r"a file without an extension cannot be scanned",
        "*",
    ),
    ("empty-file", _one(lambda t: sparse_file(t / "fig.png", 0)), r"fig\.png is empty", "*"),
    ("empty-bytes", _one(lambda t: FileContent("fig.png", b"")), r"fig\.png is empty", "fig.png"),
    (
        "stream-at-eof",
        _one(_at_eof),
        r"is empty \(a stream is read from its current position\)",
        "*",
    ),
    (
        "document-30MB",
        _one(lambda t: write_pdf(t / "big.pdf", 1, size=DOC_MAX)),
        r"big\.pdf is 30\.00 MB; a document must be under 30\.00 MB \(30000000 bytes",
        "*",
    ),
    (
        "image-20MB",
        _one(lambda t: write_image(t / "big.png", size=IMG_MAX)),
        r"big\.png is 20\.00 MB; each image must be under 20\.00 MB \(20000000 bytes",
        "*",
    ),
    (
        "pdf-50-pages",
        _one(lambda t: write_pdf(t / "long.pdf", 50)),
        r"long\.pdf has 50 pages; a document must have fewer than 50",
        "*",
    ),
    (
        "docx-50-pages",
        _one(lambda t: write_docx(t / "long.docx", 50)),
        r"long\.docx has 50 pages",
        "*",
    ),
    (
        "docx-not-zip",
        _one(lambda t: write_docx(t / "fake.docx", zip_ok=False)),
        r"fake\.docx is not a \.docx file: not a ZIP archive",
        "*",
    ),
    (
        "pdf-garbage",
        _one(lambda t: sparse_file(t / "fake.pdf", 100, head=b"hello")),
        r"fake\.pdf is not a PDF: no %PDF- header",
        "*",
    ),
    (
        "pdf-truncated",
        _one(lambda t: sparse_file(t / "cut.pdf", None, head=pdf_bytes(3)[:300])),
        r"cut\.pdf is a damaged or truncated PDF: no %%EOF",
        "*",
    ),
    (
        "pdf-unreadable-structure",
        _one(lambda t: sparse_file(t / "bad.pdf", None, head=b"%PDF-1.7\nxx\n%%EOF\n")),
        r"bad\.pdf is not a readable PDF",
        "*",
    ),
    (
        "pdf-no-pages",
        _one(lambda t: write_pdf(t / "none.pdf", 0)),
        r"none\.pdf has no pages",
        "*",
    ),
    (
        "26-images",
        _one(lambda t: [write_image(t / f"f{i}.png", seed=i) for i in range(26)]),
        r"one scan takes up to 25 images, got 26",
        None,
    ),
    (
        "document-and-image",
        _one(lambda t: [write_pdf(t / "a.pdf"), write_image(t / "b.png")]),
        r"one scan is either one document or images: .*a\.pdf cannot go with .*b\.png",
        "*",
    ),
    (
        "two-documents",
        _one(lambda t: [write_pdf(t / "a.pdf"), write_docx(t / "b.docx")]),
        r"one scan takes one document, got 2",
        "*",
    ),
    (
        "empty-sequence",
        _one(lambda t: []),
        r"nothing to upload: the sequence of files is empty",
        None,
    ),
    ("empty-path", _one(lambda t: ""), r"an empty path is not a file", None),
    ("bare-bytes", _one(lambda t: png_bytes()), r"raw bytes have no file name", None),
    ("bare-stream", _one(lambda t: io.BytesIO(b"x")), r"a bare BytesIO has no file name", None),
    ("int", _one(lambda t: 3), r"expected a path, a FileContent.*got int", None),
    (
        "nested",
        _one(lambda t: [[write_image(t / "a.png")]]),
        r"sequences do not nest",
        None,
    ),
    ("no-filename", _one(lambda t: starlette_upload(b"x", None)), r"needs a file name", None),
    ("blank-filename", _one(lambda t: FileContent("  ", b"x")), r"needs a file name", None),
    (
        "control-char",
        _one(lambda t: FileContent("a\r\nb.png", b"x")),
        r"control characters in a file name",
        "a\r\nb.png",
    ),
    (
        "text-stream",
        _one(lambda t: FileContent("a.svg", io.StringIO("<svg/>"))),  # type: ignore[arg-type]
        r"a text stream; open the file in binary mode",
        "a.svg",
    ),
    (
        "str-content",
        _one(lambda t: FileContent("a.svg", "<svg/>")),  # type: ignore[arg-type]
        r"content must be bytes or a binary stream, got str",
        "a.svg",
    ),
    ("closed-stream", _one(_closed_stream), r"fig\.png: the stream is closed", "fig.png"),
    (
        "unseekable-too-big",
        _one(lambda t: FileContent("fig.png", Zeros())),  # type: ignore[arg-type]
        r"fig\.png: the stream holds at least 20\.\d\d MB; each image must be under 20\.00 MB",
        "fig.png",
    ),
    (
        "legacy-scanImages-webp",
        _one(lambda t: write_image(t / "a.webp"), legacy="scanImages"),
        r"deprecated scanImages endpoint takes images of \.bmp.* only",
        "*",
    ),
    (
        "legacy-scanImages-pdf",
        _one(lambda t: write_pdf(t / "a.pdf"), legacy="scanImages"),
        r"scanImages endpoint takes images",
        "*",
    ),
    (
        "legacy-scanPdf-docx",
        _one(lambda t: write_docx(t / "a.docx"), legacy="scanPdf"),
        r"deprecated scanPdf endpoint takes one \.pdf file only",
        "*",
    ),
    (
        "legacy-scanPdf-image",
        _one(lambda t: write_image(t / "a.png"), legacy="scanPdf"),
        r"scanPdf endpoint takes one \.pdf file only",
        "*",
    ),
]


@pytest.mark.parametrize("score", [-0.1, 0.91, 1, math.nan, math.inf, -math.inf, True, "0.5"])
def test_min_score_outside_the_range_is_refused(score: Any) -> None:
    with pytest.raises(InvalidUpload, match=r"min_score must be a number from 0\.0 to 0\.9"):
        validate_min_score(score)


@pytest.mark.parametrize(
    ("build", "message", "source"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_invalid_uploads_are_refused_with_a_clear_message(
    tmp_path: Path, build: Build, message: str, source: str | None
) -> None:
    files, kwargs = build(tmp_path)
    with pytest.raises(InvalidUpload, match=message) as caught:
        prepare_upload(files, **kwargs)
    assert isinstance(caught.value, ValueError)
    if source is None:
        assert caught.value.source is None
    elif source == "*":
        assert caught.value.source is not None
        assert caught.value.source in str(caught.value)
    else:
        assert caught.value.source == source


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root (tests may run as root), so simulate the open() failure.
    path = write_image(tmp_path / "secret.png")

    def refuse(path: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_uploads, "_open_binary", refuse)
    with pytest.raises(InvalidUpload, match=r"secret\.png is not readable \(permission denied\)"):
        prepare_upload(path)


def test_a_bad_legacy_value_is_an_argument_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="legacy must be"):
        prepare_upload(write_pdf(tmp_path / "a.pdf"), legacy="scanDocx")  # type: ignore[arg-type]


# --- what is accepted, at the exact boundaries ----------------------------------------------


@pytest.mark.parametrize(("pages", "ok"), [(1, True), (49, True), (50, False), (51, False)])
def test_pdf_pages_are_counted_for_real(tmp_path: Path, pages: int, ok: bool) -> None:
    path = write_pdf(tmp_path / "paper.pdf", pages)
    if ok:
        with prepare_upload(path) as upload:
            assert upload.parts[0].pages == pages
    else:
        with pytest.raises(InvalidUpload, match=f"has {pages} pages"):
            prepare_upload(path)


@pytest.mark.parametrize(("pages", "ok"), [(None, True), (1, True), (49, True), (50, False)])
def test_docx_pages_come_from_words_cached_count(
    tmp_path: Path, pages: int | None, ok: bool
) -> None:
    path = write_docx(tmp_path / "paper.docx", pages)
    if ok:
        with prepare_upload(path) as upload:
            assert upload.kind == "document"
            assert upload.parts[0].pages == pages  # None: no <Pages>, check skipped
    else:
        with pytest.raises(InvalidUpload, match="has 50 pages"):
            prepare_upload(path)


def test_docx_page_count_with_a_namespace_prefix(tmp_path: Path) -> None:
    path = tmp_path / "odd.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr(
            "docProps/app.xml", "<ep:Properties><ep:Pages> 7 </ep:Pages></ep:Properties>"
        )
    assert prepare_upload(path).parts[0].pages == 7


def _encrypted_pdf(path: Path, user_password: str) -> Path:
    writer = PdfWriter()
    for _ in range(4):
        writer.add_blank_page(72, 72)
    # RC4: pypdf decrypts it without the optional AES backend.
    writer.encrypt(user_password, owner_password="owner", algorithm="RC4-128")
    with path.open("wb") as out:
        writer.write(out)
    return path


def test_a_pdf_encrypted_only_for_permissions_is_counted(tmp_path: Path) -> None:
    assert prepare_upload(_encrypted_pdf(tmp_path / "locked.pdf", "")).parts[0].pages == 4


def test_a_pdf_that_needs_a_password_to_open_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidUpload, match=r"locked\.pdf is password-protected"):
        prepare_upload(_encrypted_pdf(tmp_path / "locked.pdf", "user-secret"))


def test_a_pdf_with_a_wrong_xref_offset_is_repaired_and_counted(tmp_path: Path) -> None:
    data = pdf_bytes(3)
    at = data.rindex(b"startxref")
    path = tmp_path / "shifted.pdf"
    path.write_bytes(data[:at] + b"startxref\n17\n%%EOF\n")
    assert prepare_upload(path).parts[0].pages == 3


@pytest.mark.parametrize(
    ("name", "size", "ok"),
    [
        ("paper.pdf", DOC_MAX - 1, True),
        ("paper.pdf", DOC_MAX, False),
        ("paper.pdf", DOC_MAX + 1, False),
        ("paper.docx", DOC_MAX - 1, True),
        ("paper.docx", DOC_MAX, False),
        ("fig.png", IMG_MAX - 1, True),
        ("fig.png", IMG_MAX, False),
        ("fig.tiff", IMG_MAX + 1, False),
        ("fig.png", 1, True),
        ("fig.png", 0, False),
    ],
)
def test_exact_size_boundaries_with_sparse_files(
    tmp_path: Path, name: str, size: int, ok: bool
) -> None:
    path = tmp_path / name
    if name.endswith(".pdf"):
        write_pdf(path, 49, size=size)
    elif name.endswith(".docx"):
        write_docx(path, 49, size=size)
    else:
        sparse_file(path, size, head=png_bytes()[:size])
    assert path.stat().st_blocks * 512 < 1 * MIB  # sparse: the test costs no disk
    if ok:
        with prepare_upload(path) as upload:
            assert upload.parts[0].size == size
    else:
        with pytest.raises(InvalidUpload):
            prepare_upload(path)


def test_twenty_five_images_are_one_scan(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"fig{i}.png", seed=i) for i in range(25)]
    with prepare_upload(paths) as upload:
        assert upload.kind == "images"
        assert [part.filename for part in upload.parts] == [p.name for p in paths]


@pytest.mark.parametrize("score", [None, 0, 0.0, 0.33, 0.9])
def test_min_score_range_is_inclusive(score: float | None) -> None:
    assert validate_min_score(score) == (None if score is None else float(score))


def test_extensions_are_case_insensitive_and_content_types_official(tmp_path: Path) -> None:
    with prepare_upload(write_pdf(tmp_path / "PAPER.PDF")) as upload:
        assert upload.parts[0].content_type == "application/pdf"
        assert upload.parts[0].filename == "PAPER.PDF"  # the name is sent as given
    with prepare_upload(write_docx(tmp_path / "Paper.Docx")) as upload:
        assert upload.parts[0].content_type == (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        )
    names = ["a.JPG", "b.jpeg", "c.JFIF", "d.Png", "e.gif", "f.bmp", "g.TIF", "h.tiff", "i.svg"]
    paths = [write_image(tmp_path / n) for n in [*names, "j.webp"]]
    with prepare_upload(paths) as upload:
        assert [p.content_type for p in upload.parts] == [
            *["image/jpeg"] * 3,
            "image/png",
            "image/gif",
            "image/bmp",
            *["image/tiff"] * 2,
            "image/svg+xml",
            "image/webp",
        ]
    with prepare_upload(paths[:-1], legacy="scanImages") as upload:  # no .webp: fine
        assert len(upload.parts) == 9


def test_content_types_cover_exactly_the_accepted_extensions() -> None:
    assert set(CONTENT_TYPES) == _spec.DOCUMENT_EXTENSIONS | _spec.IMAGE_EXTENSIONS


def test_a_sequence_with_one_document_is_that_document(tmp_path: Path) -> None:
    with prepare_upload([write_pdf(tmp_path / "a.pdf")], legacy="scanPdf") as upload:
        assert upload.kind == "document"


def test_only_the_last_component_of_a_given_name_is_sent() -> None:
    with prepare_upload(FileContent("C:\\Users\\ana\\fig 1.png", png_bytes())) as upload:
        assert upload.parts[0].filename == "fig 1.png"


def test_a_stream_starting_mid_way_is_counted_and_sent_from_there(tmp_path: Path) -> None:
    junk = b"not part of the upload" * 10
    stream = io.BytesIO(junk + pdf_bytes(3))
    stream.seek(len(junk))
    with prepare_upload(FileContent("mid.pdf", stream)) as upload:
        assert upload.parts[0].pages == 3
        assert upload.parts[0].size == len(pdf_bytes(3))
        assert stream.tell() == len(junk)  # validation put it back


# --- streaming bodies: fresh, identical, closed ---------------------------------------------


def expected_body(boundary: str, parts: list[tuple[str, str, bytes]], field: str = "file") -> bytes:
    out = b""
    for filename, content_type, data in parts:
        out += (
            (
                f"--{boundary}\r\nContent-Type: {content_type}\r\n"
                f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def _sources(tmp: Path) -> Iterator[tuple[str, Any, bytes]]:
    pdf = pdf_bytes(2)
    yield "path", write_pdf(tmp / "paper.pdf", 2), pdf
    yield "str-path", str(write_pdf(tmp / "paper2.pdf", 2)), pdf
    yield "bytes", FileContent("paper.pdf", pdf), pdf
    yield "bytesio", FileContent("paper.pdf", io.BytesIO(pdf)), pdf
    yield "open-file", FileContent("paper.pdf", (tmp / "paper.pdf").open("rb")), pdf
    yield "starlette", starlette_upload(pdf), pdf
    yield "unseekable", FileContent("paper.pdf", Unseekable(pdf)), pdf  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind", ["path", "str-path", "bytes", "bytesio", "open-file", "starlette", "unseekable"]
)
async def test_two_attempts_send_byte_identical_bodies(tmp_path: Path, kind: str) -> None:
    sources = list(_sources(tmp_path))
    _, source, data = next(s for s in sources if s[0] == kind)
    for other in sources:  # close the streams of the sources this case does not use
        if other[1] is not source:
            stream = getattr(other[1], "content", None) or getattr(other[1], "file", None)
            if stream is not None and not isinstance(stream, bytes):
                stream.close()
    with prepare_upload(source) as upload:
        first = await render_body(form_data(upload))
        second = await render_body(form_data(upload))
    assert first.boundary != second.boundary  # each attempt is its own form
    assert first.canonical() == second.canonical()
    name = upload.parts[0].filename
    assert first.body == expected_body(first.boundary, [(name, "application/pdf", data)])
    for stream in (getattr(source, "content", None), getattr(source, "file", None)):
        if stream is not None and not isinstance(stream, bytes):
            assert not stream.closed  # the caller's stream stays the caller's
            if stream.seekable():
                assert stream.tell() == 0  # and is left where it was
            stream.close()


async def test_images_body_has_fields_first_then_each_file_in_order(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / "a.png"), write_image(tmp_path / "b.jpg")]
    shirt = FileContent("c.gif", image_bytes(".gif"))
    with prepare_upload([*paths, shirt]) as upload:
        rendered = await render_body(
            form_data(upload, "imageFile", extra_fields=[("minScore", "0.5")])
        )
    boundary = rendered.boundary
    field = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        'Content-Disposition: form-data; name="minScore"\r\n\r\n0.5\r\n'
    ).encode()
    files = expected_body(
        boundary,
        [
            ("a.png", "image/png", png_bytes()),
            ("b.jpg", "image/jpeg", jpeg_bytes()),
            ("c.gif", "image/gif", image_bytes(".gif")),
        ],
        field="imageFile",
    )
    assert rendered.body == field + files


async def test_non_ascii_names_are_sent_as_utf8_like_curl(tmp_path: Path) -> None:
    with prepare_upload(FileContent("Abbildung ü 1.png", png_bytes())) as upload:
        rendered = await render_body(form_data(upload))
    assert 'filename="Abbildung ü 1.png"'.encode() in rendered.body


async def test_files_we_open_are_closed_and_nothing_leaks(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"f{i}.png", seed=i) for i in range(3)]
    # Record rather than raise: a collection may also surface other libraries' garbage (an
    # event loop left by a pytest plugin, say); only warnings about our files count here.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        upload = prepare_upload(paths)
        await render_body(form_data(upload))  # sent: aiohttp-style close after writing
        assert upload._handles == set()
        form = form_data(upload)  # built, never sent: close() must release it
        opened = set(upload._handles)
        assert len(opened) == 3
        upload.close()
        assert all(handle.closed for handle in opened)
        del form
        gc.collect()
    assert [w for w in caught if str(tmp_path) in str(w.message)] == []
    with pytest.raises(ValueError, match="closed"):
        form_data(upload)


async def test_a_spooled_stream_is_closed_with_the_upload() -> None:
    upload = prepare_upload(FileContent("fig.png", Unseekable(png_bytes())))  # type: ignore[arg-type]
    (spool,) = upload._resources
    assert (await render_body(form_data(upload))).body.count(png_bytes()) == 1
    upload.close()
    assert spool.closed


def test_a_file_changed_after_validation_is_caught_before_sending(tmp_path: Path) -> None:
    path = write_image(tmp_path / "fig.png")
    with prepare_upload(path) as upload:
        sparse_file(path, IMG_MAX + 10, head=png_bytes())
        with pytest.raises(InvalidUpload, match=r"changed size"):
            form_data(upload)
        path.unlink()
        with pytest.raises(InvalidUpload, match=r"can no longer be read"):
            form_data(upload)
        assert upload._handles == set()


def test_sha256_frames_parts_and_ignores_names(tmp_path: Path) -> None:
    a, b = png_bytes(1), png_bytes(2)
    expected = hashlib.sha256(
        len(a).to_bytes(8, "big") + a + len(b).to_bytes(8, "big") + b
    ).hexdigest()
    (tmp_path / "x.png").write_bytes(a)
    from_disk = prepare_upload([tmp_path / "x.png", FileContent("y.png", io.BytesIO(b))])
    in_memory = prepare_upload([FileContent("renamed.png", a), starlette_upload(b, "z.png")])
    assert from_disk.sha256() == in_memory.sha256() == expected
    assert from_disk.sha256() is from_disk.sha256()  # cached
    one = prepare_upload(FileContent("ab.png", a + b))
    assert one.sha256() != expected


# --- FastAPI's real UploadFile, and a real HTTP request --------------------------------------


def test_fastapi_route_can_scan_its_upload_file() -> None:
    app = FastAPI()

    @app.post("/check")
    async def check(paper: FastAPIUploadFile) -> dict[str, Any]:
        with prepare_upload(paper) as upload:
            first = await render_body(form_data(upload))
            second = await render_body(form_data(upload))
            return {
                "kind": upload.kind,
                "pages": upload.parts[0].pages,
                "same": first.canonical() == second.canonical(),
                "sha": hashlib.sha256(pdf_bytes(5)).hexdigest()
                if pdf_bytes(5) in first.body
                else "",
                "still_open": not paper.file.closed,
            }

    with TestClient(app) as http:
        answer = http.post(
            "/check", files={"paper": ("paper.pdf", pdf_bytes(5), "application/pdf")}
        )
    assert answer.json() == {
        "kind": "document",
        "pages": 5,
        "same": True,
        "sha": hashlib.sha256(pdf_bytes(5)).hexdigest(),
        "still_open": True,
    }


async def test_sent_twice_over_http_the_server_receives_the_same_parts(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        parts = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            data = await part.read()
            parts.append((part.name, part.filename, part.headers.get("Content-Type"), bytes(data)))
        received.append({"length": request.content_length, "parts": parts})
        return web.json_response({"scanId": "x"})

    app = web.Application()
    app.router.add_post("/scan", handler)
    stream = starlette_upload(png_bytes(7), "fig7.png")
    files: list[Any] = [
        write_image(tmp_path / "fig1.png", seed=1),
        FileContent("fig2.jpg", jpeg_bytes()),
        stream,
    ]
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        with prepare_upload(files) as upload:
            for _ in range(2):
                form = form_data(upload, extra_fields={"minScore": "0.5"})
                async with session.post(server.make_url("/scan"), data=form) as response:
                    assert response.status == 200
            assert upload._handles == set()  # aiohttp closed what we opened
        assert not stream.file.closed  # and left the caller's stream alone
    assert received[0] == received[1]
    assert received[0]["length"] is not None  # sizes known up front: a Content-Length
    assert received[0]["parts"] == [
        ("minScore", None, "text/plain; charset=utf-8", b"0.5"),
        ("file", "fig1.png", "image/png", png_bytes(1)),
        ("file", "fig2.jpg", "image/jpeg", jpeg_bytes()),
        ("file", "fig7.png", "image/png", png_bytes(7)),
    ]


# --- memory: a 25 MiB file is streamed, never held ------------------------------------------


async def test_a_25_mib_document_is_never_held_in_memory(tmp_path: Path) -> None:
    size = 25 * MIB
    path = write_pdf(tmp_path / "big.pdf", 3, size=size)
    written = 0
    digest = hashlib.sha256()

    def sink(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)
        digest.update(chunk)

    tracemalloc.start()
    try:
        with prepare_upload(path) as upload:
            upload.sha256()
            await write_body(form_data(upload), sink)
            await write_body(form_data(upload), sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n25 MiB PDF: validate + sha256 + 2 bodies written, tracemalloc peak {peak / MIB:.2f} MiB"
    )
    assert written > 2 * size
    assert peak < 2 * MIB, f"peak {peak} bytes: the file was held in memory"


# --- properties: valid iff every rule holds ---------------------------------------------------

DOCS = sorted(_spec.DOCUMENT_EXTENSIONS)
IMAGES = sorted(_spec.IMAGE_EXTENSIONS)
OTHERS = [".txt", ".zip", ".doc", ".heic", ""]


def oracle(specs: list[dict[str, Any]], min_score: object, legacy: str | None) -> bool:
    """The reference's rules, written once and independently of the implementation."""
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, int | float):
            return False
        if not (math.isfinite(min_score) and 0.0 <= min_score <= 0.9):
            return False
    if not specs:
        return False
    extensions = [spec["ext"].lower() for spec in specs]
    if any(e not in _spec.DOCUMENT_EXTENSIONS | _spec.IMAGE_EXTENSIONS for e in extensions):
        return False
    documents = sum(e in _spec.DOCUMENT_EXTENSIONS for e in extensions)
    images = len(extensions) - documents
    if (documents and images) or documents > 1 or images > 25:
        return False
    if legacy == "scanPdf" and extensions != [".pdf"]:
        return False
    if legacy == "scanImages" and (documents or ".webp" in extensions):
        return False
    for spec, ext in zip(specs, extensions, strict=True):
        is_doc = ext in _spec.DOCUMENT_EXTENSIONS
        if spec["size"] == 0 or spec["size"] >= (DOC_MAX if is_doc else IMG_MAX):
            return False
        if is_doc and spec["pages"] is not None and spec["pages"] >= 50:
            return False
    return True


def _case(draw: st.DrawFn, ext: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in ext)


@st.composite
def file_specs(draw: st.DrawFn, extensions: list[str]) -> dict[str, Any]:
    ext = draw(st.sampled_from(extensions))
    container = draw(st.sampled_from(["path", "path", "bytes", "stream"]))
    pages = None
    if ext in DOCS:
        pages = draw(st.sampled_from([1, 1, 49, 50] + ([None] if ext == ".docx" else [])))
    big = [DOC_MAX - 1, DOC_MAX] if ext in DOCS else [IMG_MAX - 1, IMG_MAX, IMG_MAX + 1]
    # Huge sizes only as sparse files on disk: bytes and streams stay small.
    sizes = ["natural"] * 6 + ["empty"] + (big if container == "path" else [])
    size_choice = draw(st.sampled_from(sizes))
    return {
        "ext": _case(draw, ext),
        "container": container,
        "pages": pages,
        "size_choice": size_choice,
        "stem": draw(st.text("abcxyz_- 0123", min_size=1, max_size=8)).strip() or "f",
    }


def _content(spec: dict[str, Any]) -> bytes:
    ext = spec["ext"].lower()
    if ext == ".pdf":
        return pdf_bytes(spec["pages"])
    if ext == ".docx":
        return docx_bytes(spec["pages"])
    return image_bytes(ext) if ext in IMAGES else b"some bytes"


def _materialise(spec: dict[str, Any], directory: Path, index: int) -> Any:
    name = f"{spec['stem']}{index}{spec['ext']}"
    ext = spec["ext"].lower()
    choice = spec["size_choice"]
    if choice == "empty":
        data = b""
    elif choice == "natural":
        data = _content(spec)
    else:
        data = None  # a sparse file of exactly `choice` bytes
    spec["size"] = len(data) if data is not None else choice
    if spec["container"] == "bytes" and data is not None:
        return FileContent(name, data)
    if spec["container"] == "stream" and data is not None:
        return starlette_upload(data, name)
    path = directory / name
    if data is not None:
        path.write_bytes(data)
    elif ext == ".pdf":
        write_pdf(path, spec["pages"], size=choice)
    elif ext == ".docx":
        write_docx(path, spec["pages"], size=choice)
    else:
        sparse_file(path, choice, head=_content(spec))
    return path


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    # Shapes near the valid region, or anything at all: most random mixes are invalid.
    specs=st.one_of(
        st.lists(file_specs(DOCS), min_size=1, max_size=1),
        st.lists(file_specs(IMAGES), min_size=1, max_size=26),
        st.lists(file_specs(DOCS + IMAGES + OTHERS), max_size=27),
    ),
    bare=st.booleans(),
    min_score=st.one_of(
        st.none(),
        st.floats(0.0, 0.9),
        st.floats(-0.2, 1.0),
        st.sampled_from([math.nan, math.inf, True, False, 0, 1]),
    ),
    legacy=st.sampled_from([None, None, "scanPdf", "scanImages"]),
)
def test_prepare_upload_accepts_exactly_what_the_rules_allow(
    specs: list[dict[str, Any]], bare: bool, min_score: Any, legacy: Any
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        sources = [_materialise(spec, Path(directory), i) for i, spec in enumerate(specs)]
        files: Any = sources[0] if bare and len(sources) == 1 else sources
        expected = oracle(specs, min_score, legacy)
        event(f"valid={expected}")
        upload: Upload | None = None
        refused: InvalidUpload | None = None
        try:
            validate_min_score(min_score)  # checked by build_scan_request, beside the upload
            upload = prepare_upload(files, legacy=legacy)
        except InvalidUpload as exc:
            refused = exc
        try:
            assert (refused is None) == expected, f"{expected=} but got {refused!r} for {specs}"
            if upload is not None:
                assert [part.size for part in upload.parts] == [spec["size"] for spec in specs]
                assert upload.kind == ("document" if specs[0]["ext"].lower() in DOCS else "images")
        finally:
            if upload is not None:
                upload.close()
            for source in sources:
                if isinstance(source, UploadFile):
                    source.file.close()


# --- which MB: decimal by default (stricter), MiB on request (issue 12, item 12) ------------


@pytest.mark.parametrize(
    ("ext", "size", "unit", "accepted"),
    [
        (".png", 20 * 1000 * 1000 - 1, "MB", True),
        (".png", 20 * 1000 * 1000, "MB", False),
        (".png", 20_500_000, "MB", False),  # what a decimal-MB server refused after upload
        (".png", 20_500_000, "MiB", True),
        (".png", 20 * MIB, "MiB", False),
        (".pdf", 30_500_000, "MB", False),
        (".pdf", 30_500_000, "MiB", True),
        (".pdf", 30 * MIB, "MiB", False),
    ],
)
def test_size_limits_read_mb_as_decimal_unless_told_mib(
    tmp_path: Path, ext: str, size: int, unit: Any, accepted: bool
) -> None:
    path = tmp_path / f"f{ext}"
    if ext == ".pdf":
        write_pdf(path, 1, size=size)
    else:
        write_image(path, size=size)
    if accepted:
        prepare_upload(path, size_unit=unit).close()
    else:
        with pytest.raises(InvalidUpload, match=f"read as {unit}"):
            prepare_upload(path, size_unit=unit)


def test_an_unknown_size_unit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="size_unit"):
        prepare_upload("a.pdf", size_unit="KiB")  # type: ignore[arg-type]


# --- where the checks run: on the loop only when they are cheap ------------------------------


@pytest.mark.parametrize(
    ("files", "inline"),
    [
        (FileContent("p.pdf", pdf_bytes(1)), True),  # a few hundred bytes
        (FileContent("p.pdf", b"%PDF-" + b"0" * 5000), False),  # past 4 KiB: a thread
        (FileContent("p.PDF", bytearray(pdf_bytes(1))), True),
        ([FileContent("a.png", png_bytes()), FileContent("b.png", png_bytes())], True),
        (FileContent("big.png", b"\x89PNG" + b"0" * (2 * MIB)), False),
        (FileContent("p.pdf", io.BytesIO(pdf_bytes(1))), False),  # a stream may block
        ("paper.pdf", False),  # a path: disk I/O
        ([FileContent("a.png", png_bytes()), "b.png"], False),
        (FileContent(None, b"x"), False),  # type: ignore[arg-type]  # prepare_upload says why
        (b"raw bytes", False),
    ],
)
def test_only_small_content_in_memory_is_checked_without_a_thread(
    files: object, inline: bool
) -> None:
    assert _uploads.cheap_to_prepare(files) is inline


async def test_a_small_pdf_in_memory_is_checked_on_the_loop_and_a_path_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio  # noqa: PLC0415

    from imagetwin_async import ImagetwinClient  # noqa: PLC0415

    hops: list[object] = []
    real = asyncio.to_thread

    async def counted(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    client = ImagetwinClient("k", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InvalidUpload, match="has 60 pages"):
        await client.scan(FileContent("p.pdf", flat(b"60", 1)))  # declares 60, in 300 bytes
    assert hops == []  # refused before any thread or request
    with pytest.raises(InvalidUpload, match="no such file"):
        await client.scan(tmp_path / "missing.pdf")
    assert hops == [prepare_upload]
    await client.close()
