"""The outbound-URL rules (realtime/outbound.py) against IPv6 spellings of private IPv4
addresses: IPv4-compatible, IPv4-mapped, NAT64 (well-known and local-use prefixes), 6to4
and Teredo are judged by the IPv4 address they lead to."""

from __future__ import annotations

import pytest

from realtime.outbound import url_problem


@pytest.mark.parametrize(
    "host",
    [
        "[::127.0.0.1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",  # 169.254.169.254, the cloud metadata service
        "[64:ff9b::c0a8:101]",  # 192.168.1.1
        "[64:ff9b:1::7f00:1]",
        "[64:ff9b:1::808:808]",  # local-use NAT64 leads wherever its operator says
        "[2002:7f00:1::1]",  # 6to4 of 127.0.0.1
        "[::10.1.2.3]",
    ],
)
async def test_ipv6_spellings_of_private_ipv4_are_refused(host):
    problem = await url_problem(f"https://{host}/hook", allow_private=False)
    assert problem is not None and "non-public" in problem, host


@pytest.mark.parametrize("host", ["[64:ff9b::808:808]", "[::ffff:8.8.8.8]", "8.8.8.8"])
async def test_public_addresses_stay_allowed(host):
    assert await url_problem(f"https://{host}/hook", allow_private=False) is None


async def test_a_malformed_port_is_a_clear_problem():
    problem = await url_problem("https://example.com:notaport/", allow_private=False)
    assert problem is not None and "not an http(s) URL" in problem


@pytest.mark.parametrize("url", ["http://[::1", "https://[::1/hook", "https://::1]/"])
@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_malformed_url_is_a_problem_not_an_exception(url, allow_private):
    problem = await url_problem(url, allow_private=allow_private)
    assert problem is not None and "not an http(s) URL" in problem


@pytest.mark.parametrize(
    "host",
    ["a" * 70 + ".example.com", "exa..mple.com"],  # labels IDNA cannot encode
)
async def test_a_host_name_that_cannot_be_encoded_is_a_problem(host):
    problem = await url_problem(f"https://{host}/hook", allow_private=False)
    assert problem is not None and "does not resolve" in problem
