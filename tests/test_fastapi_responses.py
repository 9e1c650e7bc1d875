"""FastAPI services answer with the SDK's values through pydantic response models.

The user is a service author: a handler returns the ``ScanResult`` the client gave it, and the
OpenAPI document FastAPI generates describes exactly what the clients of that service get.
"""

from __future__ import annotations

from typing import Any

import attrs
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imagetwin_async import (
    InvalidUpload,
    ScanFailure,
    ScanResult,
    ScanStarted,
    ScanSuccess,
)
from imagetwin_async.fastapi import ScanOutcomeModel, ScanResultModel, ScanStartedModel

RESULT = ScanResult(
    scan_id="a" * 64,
    alteration_count=1,
    local_duplicate_count=2,
    extern_duplicate_count=0,
    pdf_report="https://app.imagetwin.test/report.pdf",
    result_url="https://app.imagetwin.test/result/a",
    min_score=0.33,
    ai_image_count=None,
    highest_score=0.99,
)


def app() -> FastAPI:
    service = FastAPI()

    @service.get("/papers/{scan_id}", response_model=ScanResultModel)
    async def paper(scan_id: str) -> Any:
        return attrs.evolve(RESULT, scan_id=scan_id)  # the attrs object, as the client gives it

    @service.post("/papers", response_model=ScanStartedModel, status_code=202)
    async def submit() -> Any:
        return ScanStarted("b" * 64, "Scan started successfully.")

    @service.get("/batches/last", response_model=list[ScanOutcomeModel])
    async def batch() -> Any:
        outcomes = [
            ScanSuccess("a.pdf", RESULT.scan_id, result=RESULT),
            ScanFailure(["f1.png", "f2.png"], None, error=InvalidUpload("f2.png: not an image")),
        ]
        return [ScanOutcomeModel.from_outcome(o) for o in outcomes]

    return service


def test_a_handler_returns_the_sdks_result_as_json() -> None:
    with TestClient(app()) as http:
        body = http.get("/papers/" + "c" * 64).json()
    assert body["scan_id"] == "c" * 64
    assert body["local_duplicate_count"] == 2
    assert body["finding_count"] == 3  # computed properties come along
    assert body["clean"] is False
    assert body["ai_image_count"] is None


def test_outcomes_carry_results_and_errors_as_data() -> None:
    with TestClient(app()) as http:
        ok, failed = http.get("/batches/last").json()
    assert ok["ok"] is True and ok["result"]["highest_score"] == 0.99
    assert failed["ok"] is False and failed["result"] is None
    assert failed["source"] == ["f1.png", "f2.png"]
    assert failed["error"] == {"type": "InvalidUpload", "message": "f2.png: not an image"}


def test_the_generated_openapi_schema_describes_every_sdk_field() -> None:
    schema = app().openapi()
    components = schema["components"]["schemas"]
    result = components["ScanResultModel"]
    sdk_fields = {field.name for field in attrs.fields(ScanResult)}
    assert sdk_fields | {"finding_count", "clean"} == set(result["properties"])
    # Required as the SDK requires them: the optional newer fields may be absent.
    assert set(result["required"]) >= {"scan_id", "alteration_count", "result_url"}
    assert "highest_score" not in result["required"]
    assert result["properties"]["alteration_count"]["type"] == "integer"
    assert result["properties"]["alteration_count"]["minimum"] == 0
    started = components["ScanStartedModel"]
    assert set(started["properties"]) == {field.name for field in attrs.fields(ScanStarted)}
    paper = schema["paths"]["/papers/{scan_id}"]["get"]["responses"]["200"]
    assert paper["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ScanResultModel"
    }
    outcome = components["ScanOutcomeModel"]["properties"]
    assert set(outcome) == {"source", "scan_id", "ok", "result", "error", "note"}
