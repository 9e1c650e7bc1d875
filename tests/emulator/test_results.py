"""GET /result, the report host's pages, /scan-overview and the Bearer key check."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yaml
from pypdf import PdfReader

from imagetwin_async import _spec
from imagetwin_async.emulator import Emulator, Endpoint, Outcome

from .._files import pdf_bytes, png_bytes
from .conftest import Scanner, form

GetJson = Callable[[str], Awaitable[tuple[int, Any]]]
RESULT_FIELDS = {
    "scanId",
    "alterationCount",
    "localDuplicateCount",
    "externDuplicateCount",
    "aiImageCount",
    "pdfReport",
    "resultUrl",
    "minScore",
    "highestScore",
}


async def test_result_lifecycle(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]],
) -> None:
    now = [0.0]
    emu = await imagetwin_emulator_factory(processing_time=30.0, time_source=lambda: now[0])
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{emu.url}/scan", data=form([("a.png", png_bytes())])) as r:
            scan_id = (await r.json())["scanId"]
        now[0] = 29.9
        async with http.get(f"{emu.url}/result/{scan_id}") as r:
            assert r.status == 202
            assert r.content_type == "application/json"
            assert (await r.json())["scanId"] == scan_id
        now[0] = 30.0
        async with http.get(f"{emu.url}/result/{scan_id}") as r:
            assert r.status == 200
            body = await r.json()
    assert set(body) == RESULT_FIELDS
    assert body["scanId"] == scan_id
    assert body["minScore"] == 0.33
    assert all(isinstance(body[k], int) for k in RESULT_FIELDS if k.endswith("Count"))
    assert isinstance(body["highestScore"], float)
    assert body["pdfReport"].startswith(emu.origin + "/pdfreport/")
    assert body["pdfReport"].endswith(".pdf")
    assert body["resultUrl"].startswith(emu.origin + "/result/")
    assert "/v1/" not in body["pdfReport"]


async def test_results_follow_the_content(
    emu: Emulator, post_scan: Scanner, get_json: GetJson
) -> None:
    bodies = []
    for _ in range(2):
        _, started = await post_scan([("a.pdf", pdf_bytes(2))], minScore="0.2")
        _, result = await get_json(f"{emu.url}/result/{started['scanId']}")
        bodies.append(
            {k: v for k, v in result.items() if k not in {"scanId", "pdfReport", "resultUrl"}}
        )
    assert bodies[0] == bodies[1]
    assert bodies[0]["minScore"] == 0.2


async def test_unknown_scan_is_404(emu: Emulator, get_json: GetJson) -> None:
    status, body = await get_json(f"{emu.url}/result/{'0' * 64}")
    assert status == 404
    assert "message" in body


async def test_scripted_outcomes(emu: Emulator, post_scan: Scanner, get_json: GetJson) -> None:
    emu.script(Outcome.failed(), file_name="broken.png")
    emu.script(Outcome.finished(local_duplicate_count=4, highest_score=0.95))
    emu.script(Outcome.never())
    ids = []
    for name in ("broken.png", "ok.png", "ok2.png", "ok3.png"):
        _, body = await post_scan([(name, png_bytes())])
        ids.append(body["scanId"])
    failed, scripted, never, plain = [await get_json(f"{emu.url}/result/{i}") for i in ids]
    assert failed[0] == 500
    assert failed[1]["message"]
    assert scripted[0] == 200
    assert (scripted[1]["localDuplicateCount"], scripted[1]["highestScore"]) == (4, 0.95)
    assert never[0] == 202
    assert plain[0] == 200
    emu.finish_scan(ids[2])
    assert (await get_json(f"{emu.url}/result/{ids[2]}"))[0] == 200


async def test_script_by_sha256(emu: Emulator, post_scan: Scanner, get_json: GetJson) -> None:
    content = png_bytes(7)
    emu.script(Outcome.finished(ai_image_count=2), sha256=hashlib.sha256(content).hexdigest())
    _, body = await post_scan([("x.png", content)])
    _, result = await get_json(f"{emu.url}/result/{body['scanId']}")
    assert result["aiImageCount"] == 2


@pytest.mark.parametrize(
    ("scan_id", "status"),
    [
        (_spec.SANDBOX_FINISHED_ID, 200),
        (_spec.SANDBOX_RUNNING_ID, 202),
        (_spec.SANDBOX_FAILED_ID, 500),
    ],
)
async def test_sandbox_results(emu: Emulator, get_json: GetJson, scan_id: str, status: int) -> None:
    got, body = await get_json(f"{emu.url}/result/{scan_id}")
    assert got == status
    if status == 200:
        assert body["localDuplicateCount"] == 2
        assert body["highestScore"] == 0.99
        assert body["pdfReport"].endswith(
            "/pdfreport/e590ff7414eef232b52c990ab15773e58c5ad9965340b8f3461531d047184a60.pdf"
        )


async def test_other_accounts_scans_are_not_found(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]],
) -> None:
    emu = await imagetwin_emulator_factory(api_keys=["key-a", "key-b"], processing_time=0)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer key-a"}
        async with http.post(
            f"{emu.url}/scan", data=form([("a.png", png_bytes())]), headers=headers
        ) as r:
            scan_id = (await r.json())["scanId"]
        async with http.get(
            f"{emu.url}/result/{scan_id}", headers={"Authorization": "Bearer key-b"}
        ) as r:
            assert r.status == 404
        async with http.get(
            f"{emu.url}/result/{_spec.SANDBOX_FINISHED_ID}",
            headers={"Authorization": "Bearer key-b"},
        ) as r:
            assert r.status == 200


async def test_results_expire_after_90_days(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]],
) -> None:
    now = [0.0]
    emu = await imagetwin_emulator_factory(processing_time=0, time_source=lambda: now[0])
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{emu.url}/scan", data=form([("a.png", png_bytes())])) as r:
            scan_id = (await r.json())["scanId"]
        now[0] = 90 * 86400.0
        async with http.get(f"{emu.url}/result/{scan_id}") as r:
            assert r.status == 200
        now[0] += 1
        async with http.get(f"{emu.url}/result/{scan_id}") as r:
            assert r.status == 404


# -- report host ---------------------------------------------------------------------------


async def test_pdf_report_and_result_page(
    emu: Emulator, post_scan: Scanner, get_json: GetJson
) -> None:
    _, body = await post_scan([("a.pdf", pdf_bytes())])
    _, result = await get_json(f"{emu.url}/result/{body['scanId']}")
    async with aiohttp.ClientSession() as plain:  # no key: the report host needs none
        async with plain.get(result["pdfReport"]) as r:
            assert r.status == 200
            assert r.content_type == "application/pdf"
            pdf = await r.read()
        async with plain.get(result["pdfReport"]) as r:
            assert await r.read() == pdf  # cached, identical
        async with plain.get(result["resultUrl"]) as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert body["scanId"] in await r.text()
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert body["scanId"] in text
    pages = [r for r in emu.requests if r.endpoint in {Endpoint.PDF_REPORT, Endpoint.RESULT_PAGE}]
    assert len(pages) == 3
    assert not any(r.authorization or r.carries_api_key for r in pages)
    assert all(r.status == 200 and r.scan_id == body["scanId"] for r in pages)


async def test_report_requests_record_a_leaked_key(
    emu: Emulator, http: aiohttp.ClientSession, get_json: GetJson
) -> None:
    _, result = await get_json(f"{emu.url}/result/{_spec.SANDBOX_FINISHED_ID}")
    async with http.get(result["pdfReport"]) as r:  # this session sends the key
        assert r.status == 200
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(result["resultUrl"], params={"token": emu.api_key}) as r,
    ):
        assert r.status == 200
    leaked = [r for r in emu.requests if r.endpoint in {Endpoint.PDF_REPORT, Endpoint.RESULT_PAGE}]
    assert [(r.authorization, r.carries_api_key) for r in leaked] == [(True, True), (False, True)]


async def test_report_of_running_or_unknown_scan_is_404(emu: Emulator, post_scan: Scanner) -> None:
    emu.script(Outcome.never())
    _, body = await post_scan([("a.png", png_bytes())])
    report = emu.scans[body["scanId"]].report_id
    async with aiohttp.ClientSession() as plain:
        for path in (
            f"/pdfreport/{report}.pdf",
            f"/result/{report}",
            "/pdfreport/nope.pdf",
            "/pdfreport/x",
        ):
            async with plain.get(emu.origin + path) as r:
                assert r.status == 404, path


# -- scan overview -------------------------------------------------------------------------


async def test_overview_json(emu: Emulator, post_scan: Scanner, get_json: GetJson) -> None:
    _, body = await post_scan([("a.png", png_bytes())])
    today = datetime.now(UTC).date()
    emu.add_overview_entry("web-1", datetime(2025, 4, 10, 13, 54, 5, tzinfo=UTC))
    emu.add_overview_entry("other", datetime(2025, 4, 10, tzinfo=UTC), user="else@example.org")
    status, overview = await get_json(
        f"{emu.url}/scan-overview?startDate={today - timedelta(days=1)}&endDate={today}"
    )
    assert status == 200
    assert overview["startDate"] == str(today - timedelta(days=1))
    assert overview["endDate"] == str(today)
    [row] = overview["scans"]
    assert row["scanId"] == body["scanId"]
    assert row["apiScan"] is True
    assert row["freeOfCharge"] is False
    assert row["user"] == emu.api_keys[emu.api_key]
    assert datetime.fromisoformat(row["scanDate"]).date() == today
    assert len(row["scanDate"]) == len("2025-04-10T13:54:05")
    status, older = await get_json(
        f"{emu.url}/scan-overview?startDate=2025-04-10&endDate=2025-04-10"
    )
    assert [r["scanId"] for r in older["scans"]] == ["web-1"]
    assert older["scans"][0]["scanDate"] == "2025-04-10T13:54:05"
    assert older["scans"][0]["apiScan"] is False


async def test_overview_csv(emu: Emulator, post_scan: Scanner, http: aiohttp.ClientSession) -> None:
    await post_scan([("a.png", png_bytes())])
    today = date.today()
    end = today + timedelta(days=1)
    url = f"{emu.url}/scan-overview?startDate=2000-01-01&endDate={end}&exportFormat=csv"
    async with http.get(url) as r:
        assert r.status == 200
        assert r.content_type == "text/csv"
        rows = list(csv.reader(io.StringIO(await r.text())))
    assert rows[0] == ["scanId", "scanDate", "user", "freeOfCharge", "apiScan"]
    assert len(rows) == 2
    assert rows[1][3:] == ["false", "true"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "startDate=2025-01-01",
        "endDate=2025-01-01",
        "startDate=2025-01-02&endDate=2025-01-01",
        "startDate=20250101&endDate=2025-01-02",
        "startDate=2025-02-30&endDate=2025-03-01",
        "startDate=yesterday&endDate=2025-03-01",
        "startDate=2025-01-01&endDate=2025-01-02&exportFormat=xml",
    ],
)
async def test_overview_400(emu: Emulator, get_json: GetJson, query: str) -> None:
    status, body = await get_json(f"{emu.url}/scan-overview?{query}")
    assert status == 400
    assert body["message"]


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "test-key"},
        {"Authorization": "Basic test-key"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/scan"),
        ("POST", "/sandbox/scan"),
        ("POST", "/scanPdf"),
        ("POST", "/scanImages"),
        ("GET", f"/result/{_spec.SANDBOX_FINISHED_ID}"),
        ("GET", "/scan-overview?startDate=2025-01-01&endDate=2025-01-02"),
    ],
)
async def test_missing_or_wrong_key_is_401(
    emu: Emulator, headers: dict[str, str], method: str, path: str
) -> None:
    async with aiohttp.ClientSession() as plain:
        data = form([("a.png", png_bytes())]) if method == "POST" else None
        async with plain.request(method, emu.url + path, headers=headers, data=data) as r:
            assert r.status == 401
            assert "message" in await r.json()
    record = emu.requests[-1]
    assert record.status == 401
    assert record.authorization == bool(headers)
    assert not record.carries_api_key
    assert emu.counters.scans_billed == 0


async def test_bearer_scheme_is_case_insensitive(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as plain:
        url = f"{emu.url}/result/{_spec.SANDBOX_FINISHED_ID}"
        async with plain.get(url, headers={"Authorization": f"bearer {emu.api_key}"}) as r:
            assert r.status == 200


async def test_unknown_routes_answer_json(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{emu.url}/nope") as r:
        assert r.status == 404
        assert "message" in await r.json()
    async with http.get(f"{emu.url}/scan") as r:
        assert r.status == 405
        assert "message" in await r.json()


async def test_openapi_is_served(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as plain:
        for url in (f"{emu.url}/openapi.yaml", f"{emu.origin}/openapi.yaml"):
            async with plain.get(url) as r:
                assert r.status == 200
                document = yaml.safe_load(await r.read())
                assert document["openapi"].startswith("3.1")
