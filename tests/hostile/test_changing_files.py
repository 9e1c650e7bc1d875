"""A file that changes while it is being uploaded (issue 12, item 10).

Adversary: another program rewriting or truncating the file mid-upload (a sync client, an
editor saving). The server must never receive the mixed bytes as a complete body, and the
caller must hear what happened (``UploadChanged``), not "may be billed".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagetwin_async import ImagetwinClient, _multipart
from imagetwin_async._errors import UploadChanged
from imagetwin_async._uploads import prepare_upload

from .._files import png_bytes
from ._server import Answer, HostileServer
from .conftest import SCAN_ID

SIZE = 1024 * 1024  # 16 chunks of 64 KiB


def _big_png(path: Path) -> Path:
    head = png_bytes(1)
    path.write_bytes(head + bytes(SIZE - len(head)))
    return path


def _rewrite(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-10] + b"0123456789")  # same size, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(SIZE // 2)


@pytest.mark.parametrize("change", [_rewrite, _truncate], ids=["rewritten", "truncated"])
async def test_a_file_changed_mid_upload_is_upload_changed_and_never_sent_whole(
    server: HostileServer,
    client: ImagetwinClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[Path], None],
) -> None:
    path = _big_png(tmp_path / "fig.png")
    server.answer = lambda seen: Answer(200, json={"scanId": SCAN_ID, "message": "billed"})
    reads = 0
    original = _multipart._call_in_thread

    async def call(function: Callable[..., Any], *args: Any) -> Any:
        nonlocal reads
        if getattr(function, "__name__", "") == "read":
            reads += 1
            if reads == 3:  # a third of the way through the body
                change(path)
        return await original(function, *args)

    monkeypatch.setattr(_multipart, "_call_in_thread", call)
    with pytest.raises(UploadChanged, match=r"fig\.png .*no scan started"):
        await client.scan(path)
    assert server.requests_to("/v1/scan") == []  # the server never had a complete body


async def test_a_file_rewritten_between_check_and_send_is_upload_changed(
    server: HostileServer, client: ImagetwinClient, tmp_path: Path
) -> None:
    path = _big_png(tmp_path / "fig.png")
    with prepare_upload(path) as upload:
        _rewrite(path)
        with pytest.raises(UploadChanged, match="rewritten"):
            _multipart.form_data(upload)
    assert server.seen == []
