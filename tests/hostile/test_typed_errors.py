"""Every bad argument is an ``ImagetwinError`` before anything is sent (issue 12, item 11).

Adversary: a new user passing what the type hints forbid, and a deployment whose journal sits
in a read-only directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagetwin_async import ImagetwinClient, ImagetwinError, InvalidArgument
from imagetwin_async import _journal as journal_module
from imagetwin_async._journal import JournalError

from ._server import HostileServer
from .conftest import SCAN_ID


@pytest.mark.parametrize("timeout", ["abc", -1, float("nan"), True, [1]])
async def test_wait_for_result_refuses_a_bad_timeout(
    server: HostileServer, client: ImagetwinClient, timeout: Any
) -> None:
    with pytest.raises(InvalidArgument, match="timeout"):
        await client.wait_for_result(SCAN_ID, timeout=timeout)
    assert server.seen == []


BAD_BATCH_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("journal=123", {"journal": 123}),
    ("journal=b'x'", {"journal": b"x"}),
    ("submit_concurrency='x'", {"submit_concurrency": "x"}),
    ("submit_concurrency=0", {"submit_concurrency": 0}),
    ("ambiguous='bogus'", {"ambiguous": "bogus"}),
    ("timeout='soon'", {"timeout": "soon"}),
    ("progress=5", {"progress": 5}),
]


@pytest.mark.parametrize(
    "options", [o for _, o in BAD_BATCH_OPTIONS], ids=[i for i, _ in BAD_BATCH_OPTIONS]
)
async def test_bad_batch_options_are_typed_errors(
    server: HostileServer, client: ImagetwinClient, pdf: Path, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        await client.submit_and_wait([pdf], **options)
    with pytest.raises(InvalidArgument):
        client.iter_outcomes([pdf], **options)
    assert server.seen == []


@pytest.mark.parametrize("batch", [None, 5, "paper.pdf", b"x"])
async def test_a_batch_that_is_not_a_collection_is_a_typed_error(
    server: HostileServer, client: ImagetwinClient, batch: Any
) -> None:
    with pytest.raises(InvalidArgument, match="batch"):
        await client.submit_and_wait(batch)
    assert server.seen == []


async def test_a_journal_that_cannot_be_opened_is_a_journal_error(
    server: HostileServer,
    client: ImagetwinClient,
    pdf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A missing directory, and a read-only one as a non-root user sees it (root, as in CI
    # containers, could write there anyway, so the lock's open is refused for it here).
    with pytest.raises(JournalError, match="does not exist"):
        await client.submit_and_wait([pdf], journal=tmp_path / "missing" / "batch.journal")
    (tmp_path / "ro").mkdir()

    def refuse(path: Path) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(journal_module, "_take_lock", refuse)
    with pytest.raises(JournalError, match="Permission denied") as caught:
        await client.submit_and_wait([pdf], journal=tmp_path / "ro" / "batch.journal")
    assert isinstance(caught.value, ImagetwinError)
    assert server.seen == []
