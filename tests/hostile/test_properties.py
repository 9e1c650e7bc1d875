"""Property tests where the hostile input space is large: any status, body and Retry-After for
a result read; any scan id and report URL for a report's file name.

Adversary: a server answering anything at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetwin_async import ImagetwinError, ScanPending, ScanResult, ScanStarted
from imagetwin_async._protocol import (
    build_result_request,
    build_scan_request,
    read_result,
    read_scan_started,
    report_target,
)
from imagetwin_async._session import ApiKey

from ._server import Answer, HostileServer
from .conftest import KEY, SCAN_ID, assert_no_key, make_client

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
SCAN_IDS = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["../x", "/abs", "..", "a/b", "C:\\x", SCAN_ID, SCAN_ID.upper(), "e" * 65]),
)


@pytest.fixture(scope="module")
def module_server() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.integers(200, 599),
    body=st.one_of(st.binary(max_size=400), JSON.map(lambda v: json.dumps(v).encode())),
    retry_after=st.one_of(st.none(), st.text(string.printable.strip(), max_size=30)),
)
def test_any_answer_to_a_result_read_is_a_value_or_a_typed_error_in_time(
    module_server: HostileServer, status: int, body: bytes, retry_after: str | None
) -> None:
    headers = () if retry_after is None else (("Retry-After", retry_after),)
    module_server.answer = lambda seen: Answer(status, body=body, headers=headers)

    async def read() -> object:
        async with make_client(module_server, timeout=1.0, max_retries=1) as client:
            return await asyncio.wait_for(client.get_result(SCAN_ID), 10)

    try:
        value = asyncio.run(read())
    except ImagetwinError as exc:
        assert_no_key(exc)
    else:
        assert isinstance(value, ScanPending | ScanResult)
        if isinstance(value, ScanResult):
            assert value.scan_id.lower() == SCAN_ID


@settings(max_examples=500, deadline=None)
@given(scan_id=SCAN_IDS, data=JSON)
def test_the_core_never_hands_out_an_id_or_result_it_should_not(scan_id: str, data: object) -> None:
    body = json.dumps({"scanId": scan_id, "message": "ok", "extra": data}).encode()
    try:
        started = read_scan_started(200, {}, body, request=build_scan_request())
    except ImagetwinError:
        pass
    else:
        assert isinstance(started, ScanStarted)
        assert len(started.scan_id) == 64 and all(c in string.hexdigits for c in started.scan_id)
    try:
        answer = read_result(200, {}, body, request=build_result_request(SCAN_ID))
    except ImagetwinError:
        pass
    else:
        assert isinstance(answer, ScanResult) and answer.scan_id.lower() == SCAN_ID


@settings(max_examples=1000, deadline=None)
@given(scan_id=st.one_of(st.none(), SCAN_IDS), name=st.text(max_size=60))
def test_a_report_file_is_always_inside_the_folder(scan_id: str | None, name: str) -> None:
    folder = Path("/srv/reports")
    url = "https://reports.example/" + name
    target = report_target(f"{folder}/", is_dir=True, scan_id=scan_id, url=url)
    assert target.parent == folder
    assert os.path.normpath(target) == str(target)
    assert target.name.endswith(".pdf") and "/" not in target.name and "\x00" not in target.name
    assert KEY not in str(target)


def _spelled(key: str, choices: list[int]) -> bytes:
    """``key`` with each character written as one of the spellings a decoder undoes."""
    out = b""
    for char, choice in zip(key, choices, strict=False):
        code = ord(char)
        forms = [
            char.encode(),
            char.swapcase().encode(),
            f"\\u{code:04x}".encode(),
            f"%{code:02X}".encode(),
            f"&#{code};".encode(),
            f"&#x{code:x};".encode(),
        ]
        out += forms[choice % len(forms)]
    return out


PRINTABLE_KEYS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@settings(max_examples=400, deadline=None)
@given(
    key=PRINTABLE_KEYS,
    before=st.binary(max_size=40),
    after=st.binary(max_size=40),
    choices=st.lists(st.integers(0, 5), min_size=1, max_size=200),
    embed=st.booleans(),
)
def test_the_cheap_check_never_lets_a_spelling_of_the_key_past_redaction(
    key: str, before: bytes, after: bytes, choices: list[int], embed: bool
) -> None:
    # Adversary: a server echoing our key in any mix of escapes, among any bytes. Redaction
    # skips its pattern when ``may_be_in`` says the key cannot be there: it must never be wrong.
    api_key = ApiKey(key)
    data = before + (_spelled(key, choices * len(key)) if embed else b"") + after
    matched = api_key._pattern.search(data) is not None
    if matched:
        assert api_key.may_be_in(data)
    assert api_key.redact(data) == api_key._pattern.sub(b"[redacted]", data)
    if embed:
        assert matched  # the spellings above are all ones the pattern knows
