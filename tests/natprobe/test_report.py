"""Pure classification: every combination of test outcomes maps to the right verdict."""

from __future__ import annotations

import json

import pytest

from natprobe.report import (
    Behaviour,
    NatReport,
    NatType,
    classic_type,
    filtering_behaviour,
    mapping_behaviour,
    mapping_independence,
    mapping_verdict,
)

EI, AD, APD = (
    Behaviour.ENDPOINT_INDEPENDENT,
    Behaviour.ADDRESS_DEPENDENT,
    Behaviour.ADDRESS_AND_PORT_DEPENDENT,
)
M1, M2, M3 = ("203.0.113.5", 1000), ("203.0.113.5", 2000), ("203.0.113.5", 3000)


@pytest.mark.parametrize(
    ("second", "third", "expected"),
    [(M1, None, EI), (M2, M2, AD), (M2, M3, APD), (None, None, None), (M2, None, None)],
)
def test_mapping(second, third, expected) -> None:  # type: ignore[no-untyped-def]
    assert mapping_behaviour(M1, second, third) is expected


@pytest.mark.parametrize(
    ("both", "port", "expected"),
    [
        (True, False, EI),
        (True, None, EI),
        (False, True, AD),
        (False, False, APD),
        (None, True, None),
        (False, None, None),
    ],
)
def test_filtering(both, port, expected) -> None:  # type: ignore[no-untyped-def]
    assert filtering_behaviour(both, port) is expected


@pytest.mark.parametrize(
    ("reachable", "nat", "independent", "filtering", "expected"),
    [
        (False, None, None, None, NatType.UDP_BLOCKED),
        (True, False, True, EI, NatType.OPEN_INTERNET),
        (True, False, True, APD, NatType.SYMMETRIC_UDP_FIREWALL),
        (True, False, True, AD, NatType.SYMMETRIC_UDP_FIREWALL),
        (True, True, True, EI, NatType.FULL_CONE),
        (True, True, True, AD, NatType.RESTRICTED_CONE),
        (True, True, True, APD, NatType.PORT_RESTRICTED_CONE),
        (True, True, False, EI, NatType.SYMMETRIC),
        (True, True, False, None, NatType.SYMMETRIC),
        (True, True, True, None, NatType.UNKNOWN),
        (True, True, None, EI, NatType.UNKNOWN),
        (True, None, None, None, NatType.UNKNOWN),
    ],
)
def test_classic_type(reachable, nat, independent, filtering, expected) -> None:  # type: ignore[no-untyped-def]
    verdict = classic_type(
        reachable=reachable, behind_nat=nat, mapping_independent=independent, filtering=filtering
    )
    assert verdict is expected


def test_json_keys_and_table() -> None:
    report = NatReport(
        server=("203.0.113.10", 3478),
        local_address=("10.0.1.2", 5000),
        public_address=M1,
        mapping=EI,
        mapping_endpoint_independent=True,
        filtering=APD,
        hairpin=False,
        binding_lifetime=29.5,
        nat_type=NatType.PORT_RESTRICTED_CONE,
        skipped={"hairpin": "because"},
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["public_address"] == "203.0.113.5:1000"
    assert data["local_address"] == "10.0.1.2:5000"
    assert data["mapping"] == "endpoint-independent"
    assert data["filtering"] == "address-and-port-dependent"
    assert data["hairpin"] is False
    assert data["binding_lifetime"] == 29.5
    assert data["nat_type"] == "port-restricted-cone"
    table = report.to_table()
    assert "port-restricted-cone" in table
    assert "not run: hairpin: because" in table


@pytest.mark.parametrize(
    ("mapping", "two_servers", "behind_nat", "expected"),
    [
        (EI, None, True, True),
        (AD, True, True, False),  # the RFC 5780 test wins over the two-server comparison
        (APD, None, True, False),
        (None, True, True, True),
        (None, False, True, False),
        (None, None, True, None),
        (None, None, False, True),  # no NAT: nothing is mapped
        (APD, False, False, True),
    ],
)
def test_mapping_independence(mapping, two_servers, behind_nat, expected) -> None:  # type: ignore[no-untyped-def]
    assert mapping_independence(mapping, two_servers, behind_nat=behind_nat) is expected


@pytest.mark.parametrize(
    ("mapping", "two_servers", "behind_nat", "expected"),
    [
        (None, None, False, (EI, True)),  # no NAT: nothing mapped, which is independent
        (None, True, True, (EI, True)),  # two servers saw one mapping
        (None, False, True, (None, False)),  # "not independent" is all two servers tell
        (None, None, True, (None, None)),
        (EI, None, True, (EI, True)),
        (AD, True, True, (AD, False)),
        (APD, None, True, (APD, False)),
    ],
)
def test_mapping_and_independence_always_agree(mapping, two_servers, behind_nat, expected) -> None:  # type: ignore[no-untyped-def]
    verdict = mapping_verdict(mapping, two_servers, behind_nat=behind_nat)
    assert verdict == expected
    assert (verdict[0] is EI) == (verdict[1] is True)


@pytest.mark.parametrize(("mapping", "independent"), [(None, True), (EI, False), (APD, True)])
def test_a_report_whose_mapping_fields_disagree_is_refused(mapping, independent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="mapping"):
        NatReport(
            server=("203.0.113.10", 3478),
            local_address=("10.0.1.2", 5000),
            public_address=M1,
            mapping=mapping,
            mapping_endpoint_independent=independent,
            filtering=None,
            hairpin=None,
            binding_lifetime=None,
            nat_type=NatType.UNKNOWN,
        )
