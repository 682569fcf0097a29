"""Which NAT tests a probe runs and, for each one it cannot or need not run, why (said
plainly to the user in ``NatReport.skipped``). Pure: decided from the first Binding
answer and the configuration before any test starts."""

from __future__ import annotations

from dataclasses import dataclass, field

NO_ALTERNATE = "the server gives no OTHER-ADDRESS (no RFC 5780 support)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbePlan:
    filtering: bool  # RFC 5780 section 4.4, from the server's alternate address
    mapping: bool  # section 4.3, through the server's alternate address
    mapping_two_servers: bool  # EIM or not, from a second plain STUN server instead
    hairpin: bool  # section 4.5
    binding_lifetime: bool  # section 4.6
    skipped: dict[str, str] = field(default_factory=dict)  # test -> why it will not run


def plan_tests(
    *,
    has_alternate: bool,
    has_second_server: bool,
    hairpin: bool,
    behind_nat: bool,
    lifetime: bool,
) -> ProbePlan:
    """``has_alternate``: the first answer named the server's other address;
    ``hairpin``/``lifetime``: the caller asked for those tests."""
    skipped: dict[str, str] = {}
    if not has_alternate:
        skipped["filtering"] = NO_ALTERNATE
        if not has_second_server and behind_nat:  # (without a NAT nothing is mapped)
            skipped["mapping"] = NO_ALTERNATE + "; pass a second server to test mapping"
    if not hairpin:
        skipped["hairpin"] = "not asked for"
    elif not behind_nat:
        skipped["hairpin"] = "not behind a NAT"
    if not lifetime:
        skipped["binding_lifetime"] = "not asked for (use --lifetime MAX_SECONDS)"
    return ProbePlan(
        filtering=has_alternate,
        mapping=has_alternate,
        mapping_two_servers=not has_alternate and has_second_server,
        hairpin=hairpin and behind_nat,
        binding_lifetime=lifetime,
        skipped=skipped,
    )
