"""Webhook destinations against real sockets: internal addresses refused at submission and
before connecting, listed hosts reached, redirects never followed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from swell.control import ControlPlane, SwellApp
from swell.control._webhooks import Destinations, WebhookSender

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST; ``redirect_to`` makes it answer 307."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.hits: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.hits.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(307 if redirect_to else 200)
                if redirect_to:
                    self.send_header("location", redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def send(sender: WebhookSender, url: str) -> Any:
    try:
        return await sender.send(url, b'{"ok": true}', secret="s", request_id="r1")
    finally:
        await sender.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1/api_keys",  # the server itself
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://2130706433:8080/",
        "http://0177.0.0.1:8080/",
        "http://localhost:8080/",  # a name that resolves to loopback
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:8080/",
        "http://224.0.0.1/",
    ],
)
async def test_submission_refuses_internal_destinations(
    plane: ControlPlane, make_archive: MakeArchive, url: str
) -> None:
    pushed = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    transport = httpx.ASGITransport(app=SwellApp(plane))
    async with httpx.AsyncClient(transport=transport, base_url="http://swell") as client:
        answer = await client.post(
            f"/model/m/deployment/{pushed.deployment_id}/async_predict",
            json={"model_input": {}, "webhook_endpoint": url},
            headers=KEY,
        )
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["detail"]
    assert detail["field"] == "webhook_endpoint" and detail["value"] == url
    assert "--webhook-allow" in detail["allowed"]
    assert not await plane.async_queue.store.unfinished_async_requests(unfinished=["QUEUED"], webhook_pending="PENDING")


async def test_refused_destination_is_never_connected_and_open_reads_as_closed(receiver: Receiver) -> None:
    open_outcome = await send(WebhookSender(first_delay=0), receiver.url)
    closed_outcome = await send(WebhookSender(first_delay=0), f"http://127.0.0.1:{closed_port()}/hook")
    assert receiver.hits == []
    assert not open_outcome.delivered and not closed_outcome.delivered
    assert open_outcome.attempts == closed_outcome.attempts == 1
    assert open_outcome.error == closed_outcome.error == (
        "refused: 127.0.0.1 is a loopback address; webhooks go to public addresses only, "
        "unless the server allows the host (--webhook-allow HOST)"
    )


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8"])
async def test_an_allowed_address_is_delivered(receiver: Receiver, allow: str) -> None:
    outcome = await send(WebhookSender(destinations=Destinations([allow])), receiver.url)
    assert outcome.delivered, outcome.error
    assert receiver.hits[0]["host"] == f"127.0.0.1:{receiver.port}"


async def test_an_allowed_name_keeps_its_host_header(receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hook"
    refused = await send(WebhookSender(first_delay=0), url)
    assert refused.error is not None and "localhost" in refused.error and receiver.hits == []
    outcome = await send(WebhookSender(destinations=Destinations(["localhost"])), url)
    assert outcome.delivered, outcome.error  # (tried on each address localhost has: ::1, 127.0.0.1)
    assert receiver.hits[0]["host"] == f"localhost:{receiver.port}"


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    redirecting = Receiver(redirect_to=receiver.url)
    try:
        sender = WebhookSender(destinations=Destinations(["127.0.0.1"]), attempts=1)
        outcome = await send(sender, redirecting.url)
    finally:
        redirecting.close()
    assert len(redirecting.hits) == 1 and receiver.hits == []
    assert not outcome.delivered
    assert outcome.error == "the receiver answered HTTP 307 (a redirect: webhooks do not follow redirects)"
