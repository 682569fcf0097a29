"""Which tests a probe runs, and the reasons it gives for the others (natprobe.plan)."""

from __future__ import annotations

from natprobe.plan import NO_ALTERNATE, plan_tests


def test_an_rfc5780_server_behind_a_nat_runs_everything_asked_for() -> None:
    plan = plan_tests(
        has_alternate=True, has_second_server=False, hairpin=True, behind_nat=True, lifetime=True
    )
    assert (plan.filtering, plan.mapping, plan.hairpin, plan.binding_lifetime) == (
        True,
        True,
        True,
        True,
    )
    assert not plan.mapping_two_servers  # the alternate address already tells
    assert plan.skipped == {}


def test_a_plain_server_skips_filtering_and_mapping_and_says_why() -> None:
    plan = plan_tests(
        has_alternate=False,
        has_second_server=False,
        hairpin=True,
        behind_nat=True,
        lifetime=False,
    )
    assert not (plan.filtering or plan.mapping or plan.mapping_two_servers)
    assert not plan.binding_lifetime
    # In this order: the report lists them as they were decided.
    assert list(plan.skipped) == ["filtering", "mapping", "binding_lifetime"]
    assert plan.skipped["filtering"] == NO_ALTERNATE
    assert "pass a second server" in plan.skipped["mapping"]
    assert "--lifetime" in plan.skipped["binding_lifetime"]


def test_a_second_server_stands_in_for_the_alternate_address() -> None:
    plan = plan_tests(
        has_alternate=False, has_second_server=True, hairpin=False, behind_nat=True, lifetime=True
    )
    assert plan.mapping_two_servers and not plan.mapping and not plan.filtering
    assert plan.skipped == {"filtering": NO_ALTERNATE, "hairpin": "not asked for"}


def test_no_hairpinning_test_without_a_nat() -> None:
    plan = plan_tests(
        has_alternate=True, has_second_server=False, hairpin=True, behind_nat=False, lifetime=True
    )
    assert not plan.hairpin
    assert plan.skipped == {"hairpin": "not behind a NAT"}


def test_without_a_nat_the_mapping_is_not_skipped() -> None:
    # Nothing is mapped, so the mapping is known (endpoint-independent) without any test.
    plan = plan_tests(
        has_alternate=False, has_second_server=False, hairpin=True, behind_nat=False, lifetime=True
    )
    assert "mapping" not in plan.skipped
    assert plan.skipped["filtering"] == NO_ALTERNATE
