"""What the gateway adds to an event before it is stored: here, the client address as kept."""

import pytest

from gateway.ingest.enrich import anonymize_ip


@pytest.mark.parametrize(("address", "kept"), [
    ("203.0.113.77", "203.0.113.0"),
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
    # A dual-stack listener's IPv4 client: its own /24, not the /48 of ::ffff:0:0/96 (which is ::).
    ("::ffff:203.0.113.77", "203.0.113.0"),
    ("not an address", ""),
])
def test_anonymize_ip_keeps_the_network_only(address: str, kept: str) -> None:
    assert anonymize_ip(address) == kept
