"""What docs/callbacks.md says a second worker answers (issue 12, item 14).

Deployment: two workers behind one load balancer, each with its own receiver, as the
documented setup builds them; a callback for a scan started by one lands on the other.
"""

from __future__ import annotations

import json

from imagetwin_async import CallbackReceiver, ImagetwinClient

from .conftest import SCAN_ID

PUBLIC = "https://my.service/imagetwin/callbacks"


def _deliver(receiver: CallbackReceiver, url: str) -> int:
    body = json.dumps({"scanId": SCAN_ID, "status": "finished"}).encode()
    status = receiver.check(url.rsplit("/", 1)[-1], len(body))
    return status if status is not None else receiver.receive(body)


async def test_with_a_token_per_receiver_the_other_worker_answers_404_wrong_token() -> None:
    async with ImagetwinClient("k1") as one, ImagetwinClient("k1") as two:
        a, b = CallbackReceiver(one, PUBLIC), CallbackReceiver(two, PUBLIC)
        assert _deliver(b, a.callback_url) == 404
        assert (b.stats.wrong_token, b.stats.unknown_scan) == (1, 0)


async def test_with_a_shared_token_the_other_worker_answers_204_unknown_scan() -> None:
    async with ImagetwinClient("k1") as one, ImagetwinClient("k1") as two:
        token = "s" * 43
        a = CallbackReceiver(one, PUBLIC, token=token)
        b = CallbackReceiver(two, PUBLIC, token=token)
        assert _deliver(b, a.callback_url) == 204
        assert (b.stats.wrong_token, b.stats.unknown_scan) == (0, 1)
