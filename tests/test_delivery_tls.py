"""Outbound postbacks to HTTPS receivers, on SQLite and PostgreSQL: the certificate is checked against
the template's host name (sent as SNI), a certificate the tracker does not trust is refused, and a
self-signed receiver is trusted by adding its certificate to CLICKTRAIL_DELIVERY_CA_FILE.

The certificates are made here (trustme); the receivers listen on 127.0.0.1."""

from collections.abc import Callable, Iterator

import pytest
import trustme

from tests.delivery_support import DELIVERY_ENV, TEMPLATE, affiliate, convert, settled, wait_until
from tests.receivers import Receiver, tls_context
from tests.support import ServerProcess, Tracker, fresh_database, start_server

NOT_TRUSTED = "TLS certificate not accepted: unable to get local issuer certificate"


@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    """The CA of the receivers' private certificates (as a self-signed receiver's would be)."""
    return trustme.CA()


@pytest.fixture(scope="module")
def trusting_node(
    backend: str, private_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A delivering server that trusts `private_ca` and may call localhost."""
    directory = tmp_path_factory.mktemp(f"tls-{backend}")
    ca_file = directory / "receivers.pem"
    private_ca.cert_pem.write_to_path(str(ca_file))
    env = {
        **DELIVERY_ENV,
        "CLICKTRAIL_DELIVERY_ALLOW_HOSTS": "127.0.0.1,localhost",
        "CLICKTRAIL_DELIVERY_CA_FILE": str(ca_file),
    }
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory, extra_env=env)
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def trusting(trusting_node: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(trusting_node)
    yield client
    client.close()


def test_by_default_a_private_or_self_signed_certificate_is_refused(
    pb: Tracker, receiver: Callable[..., Receiver], private_ca: trustme.CA
) -> None:
    partner = receiver(tls=tls_context(private_ca, "127.0.0.1"))
    source, key = affiliate(pb, partner.url + TEMPLATE)

    conversion = convert(pb, key)

    delivery = wait_until(lambda: settled(pb, conversion, source["id"]), what="the refused handshakes")
    assert delivery["status"] == "dead"  # retried like any failure: a certificate may be fixed meanwhile
    assert delivery["attempts_made"] == 3
    for attempt in delivery["attempts"]:
        assert attempt["outcome"] == "failed"
        assert attempt["status_code"] is None
        assert attempt["error"].startswith(NOT_TRUSTED)
        assert "CLICKTRAIL_DELIVERY_CA_FILE" in attempt["error"]
    assert partner.calls == []  # nothing was sent over a connection the tracker did not trust
    test = pb.api("POST", f"/sources/{source['id']}/test").json()
    assert (test["outcome"], test["error"].startswith(NOT_TRUSTED)) == ("failed", True)


def test_a_host_name_is_sent_as_sni_and_checked_against_the_certificate(
    trusting: Tracker, receiver: Callable[..., Receiver], private_ca: trustme.CA
) -> None:
    partner = receiver(tls=tls_context(private_ca, "localhost"))
    source, key = affiliate(trusting, f"https://localhost:{partner.port}{TEMPLATE}")

    conversion = convert(trusting, key)

    delivery = wait_until(lambda: settled(trusting, conversion, source["id"]), what="the delivery")
    assert delivery["status"] == "delivered"
    assert delivery["attempts"][0]["url"].startswith(f"https://localhost:{partner.port}/pb?")
    [call] = partner.calls
    assert call.query["conversion"] == conversion
    assert call.host_header == f"localhost:{partner.port}"
    assert partner.server_names == ["localhost"]  # SNI, though the connection went to the judged address


def test_an_address_in_the_url_is_checked_against_the_certificate_without_sni(
    trusting: Tracker, receiver: Callable[..., Receiver], private_ca: trustme.CA
) -> None:
    partner = receiver(tls=tls_context(private_ca, "127.0.0.1"))
    source, key = affiliate(trusting, partner.url + TEMPLATE)

    conversion = convert(trusting, key)

    delivery = wait_until(lambda: settled(trusting, conversion, source["id"]), what="the delivery")
    assert delivery["status"] == "delivered"
    assert [call.query["conversion"] for call in partner.calls] == [conversion]
    assert partner.server_names == [None]  # an IP address is never sent as a server name


def test_a_trusted_certificate_for_another_name_is_refused(
    trusting: Tracker, receiver: Callable[..., Receiver], private_ca: trustme.CA
) -> None:
    impostor = receiver(tls=tls_context(private_ca, "partner.example"))
    source, key = affiliate(trusting, f"https://localhost:{impostor.port}{TEMPLATE}")

    conversion = convert(trusting, key)

    delivery = wait_until(lambda: settled(trusting, conversion, source["id"]), what="the refused handshakes")
    assert delivery["status"] == "dead"
    assert delivery["attempts"][0]["error"].startswith(
        "TLS certificate not accepted: Hostname mismatch, certificate is not valid for 'localhost'"
    )
    assert impostor.calls == []
    assert impostor.server_names[0] == "localhost"
