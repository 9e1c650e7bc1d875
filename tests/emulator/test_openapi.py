"""The bundled OpenAPI document describes what the emulator really answers (schemathesis)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imagetwin_async import _spec
from imagetwin_async.emulator import ThreadedEmulator

SPEC = resources.files("imagetwin_async.emulator").joinpath("openapi.yaml")
schema = schemathesis.openapi.from_path(str(SPEC))
DOCUMENTED_5XX = {"/result/{scanId}": {500, 503, 504}}


@pytest.fixture(scope="module")
def emulator() -> Iterator[ThreadedEmulator]:
    # Limits off so generated cases reach the handlers instead of stopping at 429.
    with ThreadedEmulator(rate_limit_algorithm=None, processing_time=0.0) as emu:
        yield emu


def test_document_covers_the_reference() -> None:
    document = yaml.safe_load(SPEC.read_text())
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/scan",
        "/sandbox/scan",
        "/result/{scanId}",
        "/scan-overview",
        "/scanPdf",
        "/scanImages",
    }
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    description = document["paths"]["/result/{scanId}"]["get"]["description"]
    for scan_id in (_spec.SANDBOX_FINISHED_ID, _spec.SANDBOX_RUNNING_ID, _spec.SANDBOX_FAILED_ID):
        assert scan_id in description
    statuses = set(document["paths"]["/result/{scanId}"]["get"]["responses"])
    assert statuses == {"200", "202", "401", "404", "429", "500", "503", "504"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_emulator_conforms(case: Any, emulator: ThreadedEmulator) -> None:
    checks = [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    if case.path not in DOCUMENTED_5XX:
        checks.append(not_a_server_error)
    response = case.call_and_validate(
        base_url=emulator.url,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        checks=checks,
        timeout=10,
    )
    assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX.get(case.path, ())


@pytest.mark.parametrize(
    "scan_id", [_spec.SANDBOX_FINISHED_ID, _spec.SANDBOX_RUNNING_ID, _spec.SANDBOX_FAILED_ID]
)
def test_sandbox_results_conform(emulator: ThreadedEmulator, scan_id: str) -> None:
    operation = schema["/result/{scanId}"]["GET"]
    case = operation.Case(path_parameters={"scanId": scan_id})
    case.call_and_validate(
        base_url=emulator.url,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
