"""Webhook destinations: which addresses are refused, in every spelling, and the check before each try."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from swell.control._webhooks import Destinations, WebhookRefused, WebhookSender, literal_address

OWN = frozenset({ipaddress.ip_address("8.8.4.4")})  # stands for this server's public address


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.1", "127.0.0.1"),  # hex, short
        ("127.1", "127.0.0.1"),
        ("example.com", None),
        ("cafe.be", None),  # hex digits, but a name
    ],
)
def test_literal_address_reads_every_form_the_resolver_reads(host: str, address: str | None) -> None:
    got = literal_address(host)
    assert (str(got) if got is not None else None) == address


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:10.1.2.3", "private"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("8.8.4.4", "own"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_why_refused(address: str, kind: str | None) -> None:
    why = Destinations(own=OWN).why_refused(ipaddress.ip_address(address))
    if kind is None:
        assert why is None
    else:
        assert why is not None and kind in why


@pytest.mark.parametrize(
    ("allow", "host", "address"),
    [
        (["127.0.0.1"], "127.0.0.1", "127.0.0.1"),
        (["127.0.0.1"], "localhost", "127.0.0.1"),  # the address is listed
        (["10.0.0.0/8"], "10.2.3.4", "10.2.3.4"),
        (["receiver.internal"], "Receiver.Internal", "10.9.9.9"),
        (["localhost"], "localhost", "::1"),
        (["::1"], "[::1]", "::1"),
    ],
)
def test_allow_list_lets_listed_hosts_through(allow: list[str], host: str, address: str) -> None:
    Destinations(allow, own=OWN).check(host, [ipaddress.ip_address(address)])


def test_a_name_with_one_refused_address_is_refused() -> None:
    addresses = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(WebhookRefused, match=r"hook\.example \(10\.0\.0\.1\) is a private address.*--webhook-allow"):
        Destinations(own=OWN).check("hook.example", addresses)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://2130706433/x",
        "http://0177.0.0.1/x",
        "http://localhost:8080/v1/api_keys",
        "http://169.254.169.254/latest/meta-data",
    ],
)
async def test_check_url_refuses_literals_and_loopback_names(url: str) -> None:
    with pytest.raises(WebhookRefused):
        await Destinations(own=OWN).check_url(url)


class Rebinding:
    """A resolver whose answer for one name changes: public at submission, loopback after."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return self.real(host, port, *args, **kwargs)
        address = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 80))]


async def test_dns_rebinding_is_refused_at_connection_time(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Rebinding(["93.184.216.34", "127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    destinations = Destinations(own=OWN)
    await destinations.check_url("http://rebind.example/hook")  # public now: accepted
    sender = WebhookSender(destinations=destinations, first_delay=0)
    outcome = await sender.send("http://rebind.example/hook", b"{}", secret="s", request_id="r1")
    await sender.close()
    assert not outcome.delivered
    assert outcome.attempts == 1  # a refused destination is not tried again
    assert outcome.error is not None and outcome.error.startswith("refused:") and "loopback" in outcome.error
    assert resolver.asked == 2
