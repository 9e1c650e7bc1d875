"""POST /scan, /sandbox/scan and the deprecated endpoints: what they accept and each 400."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from imagetwin_async import _spec
from imagetwin_async.emulator import Emulator, Endpoint

from .._files import pdf_bytes, png_bytes
from .conftest import Scanner, docx_bytes

MIB = _spec.MIB


async def test_scan_a_pdf(emu: Emulator, post_scan: Scanner) -> None:
    content = pdf_bytes(3)
    status, body = await post_scan([("paper.pdf", content)])
    assert status == 200
    assert body["message"] == "Scan started successfully."
    scan = emu.scans[body["scanId"]]
    assert len(scan.scan_id) == 64
    assert scan.files[0].pages == 3
    assert scan.files[0].sha256 == hashlib.sha256(content).hexdigest()
    assert scan.min_score == _spec.DEFAULT_MIN_SCORE
    assert not scan.exclude_identical_paper
    assert emu.counters.scans_billed == 1
    record = emu.requests[-1]
    assert (record.endpoint, record.status, record.scan_id) == (Endpoint.SCAN, 200, scan.scan_id)
    assert record.file_names == ("paper.pdf",)
    assert record.sha256 == (scan.files[0].sha256,)


async def test_scan_images_with_options(emu: Emulator, post_scan: Scanner) -> None:
    images = [
        (f"fig{i}{ext}", png_bytes(i)) for i, ext in enumerate(sorted(_spec.IMAGE_EXTENSIONS))
    ]
    status, body = await post_scan(
        images,
        minScore="0.5",
        callbackUrl="https://example.org/hook?x=1",
        excludeIdenticalPaper="true",
    )
    assert status == 200, body
    scan = emu.scans[body["scanId"]]
    assert [f.name for f in scan.files] == [name for name, _ in images]
    assert scan.min_score == 0.5
    assert scan.callback_url == "https://example.org/hook?x=1"
    assert scan.exclude_identical_paper


@pytest.mark.parametrize("name", ["paper.PDF", "C:\\Users\\me\\paper.pdf", "dir/paper.pdf"])
async def test_file_names_are_read_like_a_server_would(
    emu: Emulator, post_scan: Scanner, name: str
) -> None:
    status, body = await post_scan([(name, pdf_bytes())])
    assert status == 200, body


async def test_docx_is_a_document(emu: Emulator, post_scan: Scanner) -> None:
    status, body = await post_scan([("paper.docx", docx_bytes(pages=49))])
    assert status == 200, body
    assert emu.scans[body["scanId"]].files[0].pages == 49


@pytest.mark.parametrize("score", ["0", "0.0", "0.33", "0.9", " 0.5 "])
async def test_min_score_range_is_inclusive(post_scan: Scanner, score: str) -> None:
    status, _ = await post_scan([("a.png", png_bytes())], minScore=score)
    assert status == 200


async def test_25_images_are_allowed(post_scan: Scanner) -> None:
    status, _ = await post_scan([(f"{i}.png", png_bytes(i)) for i in range(25)])
    assert status == 200


async def test_unknown_fields_are_ignored(post_scan: Scanner) -> None:
    status, _ = await post_scan([("a.png", png_bytes())], comment="hello")
    assert status == 200


MB = 1000 * 1000


async def test_image_just_under_20_mb_is_allowed(post_scan: Scanner) -> None:
    status, _ = await post_scan([("big.tif", b"\0" * (20 * MB - 1))])
    assert status == 200


async def test_document_just_under_30_mb_is_allowed(emu: Emulator, post_scan: Scanner) -> None:
    status, body = await post_scan([("big.docx", docx_bytes(padding=30 * MB - 2000))])
    assert status == 200, body
    assert emu.scans[body["scanId"]].files[0].size < 30 * MB


@pytest.mark.parametrize(("unit", "status"), [("MB", 400), ("MiB", 200)])
async def test_the_emulator_reads_mb_as_configured(
    emu: Emulator, post_scan: Scanner, unit: str, status: int
) -> None:
    # 20.5 MB: refused by a server reading decimal MB, taken by one reading MiB.
    emu.configure(size_unit=unit)  # type: ignore[arg-type]
    got, body = await post_scan([("big.tif", b"\0" * 20_500_000)])
    assert got == status, body
    if status == 400:
        assert "under 20 MB (20000000 bytes)" in body["message"]


# -- every limit answers 400 with a message naming it -------------------------------------


@pytest.mark.parametrize(
    ("files", "fields", "words"),
    [
        pytest.param([("notes.txt", b"x")], {}, "not allowed", id="extension"),
        pytest.param([("noextension", b"x")], {}, "not allowed", id="no-extension"),
        pytest.param([("big.pdf", b"\0" * (30 * MIB))], {}, "under 30 MB", id="document-30mib"),
        pytest.param([("long.pdf", pdf_bytes(50))], {}, "fewer than 50 pages", id="pdf-50-pages"),
        pytest.param(
            [("long.docx", docx_bytes(pages=50))], {}, "fewer than 50 pages", id="docx-50-pages"
        ),
        pytest.param([("big.png", b"\0" * (20 * MIB))], {}, "under 20 MB", id="image-20mib"),
        pytest.param(
            [(f"{i}.png", png_bytes(i)) for i in range(26)], {}, "at most 25", id="26-images"
        ),
        pytest.param(
            [("a.pdf", pdf_bytes()), ("b.png", png_bytes())], {}, "not both", id="document-image"
        ),
        pytest.param(
            [("b.png", png_bytes()), ("a.pdf", pdf_bytes())], {}, "not both", id="image-document"
        ),
        pytest.param(
            [("a.pdf", pdf_bytes()), ("b.docx", docx_bytes())], {}, "one document", id="2-docs"
        ),
        pytest.param([], {"minScore": "0.5"}, "No file", id="no-file"),
        pytest.param([("a.png", png_bytes())], {"minScore": "abc"}, "minScore", id="score-text"),
        pytest.param([("a.png", png_bytes())], {"minScore": "0.95"}, "0.9", id="score-high"),
        pytest.param([("a.png", png_bytes())], {"minScore": "-0.1"}, "minScore", id="score-low"),
        pytest.param([("a.png", png_bytes())], {"minScore": "nan"}, "minScore", id="score-nan"),
        pytest.param(
            [("a.png", png_bytes())],
            {"excludeIdenticalPaper": "yes"},
            "true or false",
            id="exclude-yes",
        ),
        pytest.param(
            [("a.png", png_bytes())],
            {"excludeIdenticalPaper": "True"},
            "true or false",
            id="exclude-capital",
        ),
        pytest.param(
            [("a.png", png_bytes())], {"callbackUrl": "ftp://x.org/"}, "http", id="callback-ftp"
        ),
        pytest.param(
            [("a.png", png_bytes())], {"callbackUrl": "not a url"}, "http", id="callback-text"
        ),
    ],
)
async def test_limits_answer_400(
    emu: Emulator,
    post_scan: Scanner,
    files: list[tuple[str, bytes]],
    fields: dict[str, str],
    words: str,
) -> None:
    status, body = await post_scan(files, **fields)
    assert status == 400
    assert words in body["message"]
    assert emu.counters.scans_billed == 0
    assert emu.scans == {}


async def test_a_file_field_without_a_file_name(emu: Emulator, http: aiohttp.ClientSession) -> None:
    data = aiohttp.FormData()
    data.add_field("file", "just text")
    data.add_field("other", "x", filename="x.png")  # forces multipart
    async with http.post(f"{emu.url}/scan", data=data) as response:
        assert response.status == 400
        assert "file name" in (await response.json())["message"]


async def test_not_multipart(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{emu.url}/scan", json={"file": "x"}) as response:
        assert response.status == 400
        assert "multipart/form-data" in (await response.json())["message"]


async def test_oversized_upload_is_cut_short(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """The 400 comes while the body streams: the emulator never holds the whole upload."""

    async def body() -> object:
        yield b"\0" * MIB
        for _ in range(200):  # 200 MiB would take a while to buffer; the answer comes first
            yield b"\0" * MIB

    data = aiohttp.FormData()
    data.add_field("file", body(), filename="huge.png")
    try:
        async with http.post(f"{emu.url}/scan", data=data) as response:
            assert response.status == 400
    except aiohttp.ClientError:
        pass  # the server may close the connection on the rest of the upload
    assert emu.requests[-1].status == 400


# -- unreadable documents ---------------------------------------------------------------


async def test_unreadable_pdf_is_refused_by_default(emu: Emulator, post_scan: Scanner) -> None:
    # What a strict server does (issue 12): 400 at once, not 200 and a failed scan later.
    status, body = await post_scan([("fake.pdf", b"%PDF-1.4 not really")])
    assert status == 400
    assert "could not be read" in body["message"]
    assert emu.counters.scans_billed == 0


async def test_unreadable_pdf_can_be_accepted_and_fail(emu: Emulator, post_scan: Scanner) -> None:
    emu.configure(corrupt_documents="fail")
    status, body = await post_scan([("fake.pdf", b"%PDF-1.4 not really")])
    assert status == 200
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(f"{emu.url}/result/{body['scanId']}") as response,
    ):
        assert response.status == 500


async def test_unreadable_documents_can_be_rejected(emu: Emulator, post_scan: Scanner) -> None:
    emu.configure(corrupt_documents="reject")
    status, body = await post_scan([("fake.docx", b"not a zip")])
    assert status == 400
    assert "could not be read" in body["message"]


async def test_unreadable_documents_can_be_accepted(
    emu: Emulator, post_scan: Scanner, get_json: object
) -> None:
    emu.configure(corrupt_documents="accept")
    status, body = await post_scan([("fake.pdf", b"garbage")])
    assert status == 200
    assert not emu.scans[body["scanId"]].fails


# -- deprecated endpoints and the sandbox -------------------------------------------------


async def test_scan_pdf(emu: Emulator, post_scan: Scanner) -> None:
    status, body = await post_scan([("a.pdf", pdf_bytes())], endpoint="scanPdf", field="pdfFile")
    assert status == 200
    assert emu.scans[body["scanId"]].endpoint is Endpoint.SCAN_PDF
    assert emu.counters.scans_billed == 1


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([("a.docx", docx_bytes())], "not allowed"),
        ([("a.pdf", pdf_bytes()), ("b.pdf", pdf_bytes())], "one PDF"),
        ([("a.pdf", pdf_bytes(50))], "fewer than 50"),
        ([], "pdfFile"),
    ],
)
async def test_scan_pdf_limits(
    post_scan: Scanner, files: list[tuple[str, bytes]], words: str
) -> None:
    status, body = await post_scan(files, endpoint="scanPdf", field="pdfFile", x="y")
    assert status == 400
    assert words in body["message"]


async def test_scan_pdf_ignores_the_new_field_name(post_scan: Scanner) -> None:
    status, _ = await post_scan([("a.pdf", pdf_bytes())], endpoint="scanPdf")
    assert status == 400


async def test_scan_images(emu: Emulator, post_scan: Scanner) -> None:
    images = [(f"{i}.jpg", png_bytes(i)) for i in range(25)]
    status, body = await post_scan(images, endpoint="scanImages", field="imageFile")
    assert status == 200
    assert len(emu.scans[body["scanId"]].files) == 25


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([("a.webp", png_bytes())], "not allowed"),
        ([("a.pdf", pdf_bytes())], "not allowed"),
        ([(f"{i}.png", png_bytes(i)) for i in range(26)], "at most 25"),
    ],
)
async def test_scan_images_limits(
    post_scan: Scanner, files: list[tuple[str, bytes]], words: str
) -> None:
    status, body = await post_scan(files, endpoint="scanImages", field="imageFile")
    assert status == 400
    assert words in body["message"]


async def test_sandbox_is_free_and_predefined(emu: Emulator, post_scan: Scanner) -> None:
    status, body = await post_scan([("a.pdf", pdf_bytes())], endpoint="sandbox/scan")
    assert status == 200
    assert body["scanId"] == _spec.SANDBOX_FINISHED_ID
    assert emu.counters.scans_billed == 0
    assert emu.counters.sandbox_scans == 1
    assert emu.scans == {}


async def test_sandbox_validates_like_scan(post_scan: Scanner) -> None:
    status, _ = await post_scan([("a.txt", b"x")], endpoint="sandbox/scan")
    assert status == 400
