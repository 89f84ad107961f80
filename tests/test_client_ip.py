"""The visitor's IP: X-Forwarded-For is believed only from trusted proxies."""

import ipaddress

from clicktrail.web.asgi import joined_header
from clicktrail.web.client_ip import client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_ip("203.0.113.9", "198.51.100.1", ()) == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"


def test_the_first_untrusted_hop_from_the_right_is_the_client() -> None:
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.1", PROXIES) == "198.51.100.1"


def test_garbage_in_the_header_stops_the_walk() -> None:
    assert client_ip("10.0.0.2", "nonsense", PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "198.51.100.1, <script>", PROXIES) == "10.0.0.2"


def test_no_peer_means_no_address() -> None:
    assert client_ip(None, None, PROXIES) is None


def test_a_second_forwarded_for_line_from_the_proxy_is_not_bypassed() -> None:
    """A proxy that appends its own X-Forwarded-For line leaves the client's forged line first;
    joining the lines in order keeps the proxy's hop the rightmost, so the forgery is not believed."""
    scope = {"headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.7")]}
    assert joined_header(scope, b"x-forwarded-for") == "6.6.6.6, 198.51.100.7"
    assert client_ip("10.0.0.2", joined_header(scope, b"x-forwarded-for"), PROXIES) == "198.51.100.7"
