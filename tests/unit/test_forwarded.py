"""The client's address behind trusted load balancers: only what they added is believed."""

from __future__ import annotations

import pytest

from services.api.forwarded import client_address, trusted_networks

PROXIES = trusted_networks("10.0.0.0/8, 127.0.0.1")


def test_a_peer_that_is_no_proxy_is_the_client_whatever_it_claims() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"


def test_behind_a_proxy_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client sent a forged first entry; nginx appended the address it saw.
    forged = "1.2.3.4, 198.51.100.7"
    assert client_address("10.1.2.3", forged, PROXIES) == "198.51.100.7"
    assert client_address("10.1.2.3", "198.51.100.7, 10.9.9.9", PROXIES) == "198.51.100.7"


@pytest.mark.parametrize("header", ["", "  ", "10.0.0.5", "not-an-address"])
def test_nothing_usable_leaves_the_proxy_as_the_caller(header: str) -> None:
    assert client_address("10.1.2.3", header, PROXIES) == "10.1.2.3"


def test_no_proxies_configured_means_none_are_trusted() -> None:
    assert trusted_networks("") == ()
    assert client_address("10.1.2.3", "198.51.100.7", ()) == "10.1.2.3"


def test_a_bad_setting_is_refused() -> None:
    with pytest.raises(ValueError):
        trusted_networks("10.0.0.0/8, nonsense")
