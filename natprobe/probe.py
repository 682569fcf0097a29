"""Run the NAT behaviour tests against a STUN server (asyncio; the decisions are pure
functions: which tests to run in plan.py, the verdicts in report.py, the lifetime search in
lifetime.py).

Tests run concurrently where they cannot disturb each other: filtering tests use their own
fresh socket (so that the mapping tests' traffic to the alternate address cannot open the
filter they measure), mapping tests use the caller's socket (the one whose mapping matters),
hairpinning uses a third socket. A test that needs no answer to reach its verdict (filtering,
hairpinning, binding lifetime) retransmits many times on a fast schedule derived from the
measured round-trip time, so that loss is not mistaken for filtering.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, replace
from typing import Any

from iokit.stun_endpoint import StunEndpoint, open_endpoint
from natprobe import lifetime
from natprobe.plan import plan_tests
from natprobe.reach import tcp_failure
from natprobe.report import (
    Behaviour,
    NatReport,
    NatType,
    classic_type,
    filtering_behaviour,
    mapping_behaviour,
    mapping_verdict,
)
from stunproto import AttrType, ChangeRequest, MessageClass, Method, StunMessage
from stunproto.attributes import Address
from stunproto.client import ResponseReceived, RetransmitPolicy
from stunproto.message import new_transaction_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    hairpin: bool = True
    lifetime_max: float | None = None  # run the binding lifetime test up to this many seconds
    second_server: Address | None = None  # for mapping tests when the server lacks RFC 5780
    local_ip: str | None = None  # address to bind fresh sockets to (default: route to server)
    initial_rto: float = 0.25  # before a round trip has been measured
    min_rto: float = 0.025
    max_rto: float = 0.5
    answered_sends: int = 9  # sends for tests that normally get an answer
    silent_sends: int = 12  # sends before no answer counts (at 30% loss each way: p=3e-4)
    # No UDP answer at all: does the server take a TCP connection on its port (STUN and our
    # rendezvous serve both)? Yes: UDP is blocked; no: no server answers there.
    tcp_timeout: float = 3.0


def binding_request(*attributes: tuple[int, object]) -> StunMessage:
    return StunMessage(Method.BINDING, MessageClass.REQUEST, new_transaction_id(), attributes)


def mapped_address(response: StunMessage) -> Address | None:
    address: Address | None = response.get(AttrType.XOR_MAPPED_ADDRESS) or response.get(
        AttrType.MAPPED_ADDRESS
    )
    return address


def route_local_ip(destination: Address) -> str:
    """The local address the kernel would use toward ``destination`` (sends nothing)."""
    family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(destination)
        return str(probe.getsockname()[0])


class _Prober:
    def __init__(self, server: Address, config: ProbeConfig, local_ip: str) -> None:
        self.server = server
        self.config = config
        self.local_ip = local_ip
        # Until a round trip is measured: doubling capped at 2 RTO, so that an unreachable
        # server is declared "udp-blocked" in seconds rather than RFC 8489's 39.5 s.
        self.answered = RetransmitPolicy(
            rto=config.initial_rto,
            max_sends=config.answered_sends,
            rto_max=2 * config.initial_rto,
            final_wait=4.0,
        )
        self.silent = self.answered
        self.skipped: dict[str, str] = {}
        self._sockets: list[StunEndpoint] = []

    def tune(self, rtt: float) -> None:
        rto = min(max(3 * rtt, self.config.min_rto), self.config.max_rto)
        self.answered = RetransmitPolicy(
            rto=rto, max_sends=self.config.answered_sends, rto_max=4 * rto, final_wait=4.0
        )
        self.silent = replace(self.answered, max_sends=self.config.silent_sends)

    async def measure_rtt(self, endpoint: StunEndpoint, attempts: int = 3) -> float | None:
        """A round trip from a transaction answered at its first send (Karn's rule: a
        retransmitted one cannot tell which send was answered). Worth a round trip when
        the first test was retransmitted: the silent tests' schedule depends on it."""
        for _ in range(attempts):
            answer = await self.ask(endpoint, binding_request(), self.server, silent=False)
            if answer is not None and answer.sends == 1:
                return answer.rtt
        return None

    async def fresh(self) -> StunEndpoint:
        endpoint = await open_endpoint((self.local_ip, 0))
        self._sockets.append(endpoint)
        return endpoint

    def close(self) -> None:
        for endpoint in self._sockets:
            endpoint.close()

    async def ask(
        self, endpoint: StunEndpoint, request: StunMessage, destination: Address, *, silent: bool
    ) -> ResponseReceived | None:
        return await endpoint.request(
            request, destination, policy=self.silent if silent else self.answered
        )

    # -------------------------------------------------------------- filtering (4.4)

    async def filtering(self, other: Address) -> Behaviour | None:
        endpoint = await self.fresh()
        both, port_only = await asyncio.gather(
            self.ask(endpoint, self._change(True, True), self.server, silent=True),
            self.ask(endpoint, self._change(False, True), self.server, silent=True),
        )
        answered_both = self._changed_as_asked(both, other, change_ip=True)
        answered_port = self._changed_as_asked(port_only, other, change_ip=False)
        if answered_both is None or answered_port is None:
            return None
        return filtering_behaviour(answered_both, answered_port)

    @staticmethod
    def _change(change_ip: bool, change_port: bool) -> StunMessage:
        return binding_request((AttrType.CHANGE_REQUEST, ChangeRequest(change_ip, change_port)))

    def _changed_as_asked(
        self, answer: ResponseReceived | None, other: Address, *, change_ip: bool
    ) -> bool | None:
        if answer is None:
            return False
        if answer.response.message_class is not MessageClass.SUCCESS:
            self.skipped["filtering"] = "the server refused CHANGE-REQUEST"
            return None
        expected_ip = other[0] if change_ip else self.server[0]
        if answer.source != (expected_ip, other[1]):
            # A server that ignores CHANGE-REQUEST answers from its primary address; taking
            # that answer as proof of open filtering would be wrong.
            self.skipped["filtering"] = (
                f"the server answered a change request from {answer.source[0]}:"
                f"{answer.source[1]}, not from the alternate address"
            )
            return None
        return True

    # -------------------------------------------------------------- mapping (4.3)

    async def mapping(
        self, endpoint: StunEndpoint, first: Address, other: Address
    ) -> Behaviour | None:
        alternate_ip = (other[0], self.server[1])
        second, third = await asyncio.gather(
            self.ask(endpoint, binding_request(), alternate_ip, silent=False),
            self.ask(endpoint, binding_request(), other, silent=False),
        )
        mapped2 = None if second is None else mapped_address(second.response)
        mapped3 = None if third is None else mapped_address(third.response)
        if mapped2 is None:
            self.skipped["mapping"] = "no answer from the server's alternate address"
        return mapping_behaviour(first, mapped2, mapped3)

    async def mapping_two_servers(
        self, endpoint: StunEndpoint, first: Address, second_server: Address
    ) -> bool | None:
        answer = await self.ask(endpoint, binding_request(), second_server, silent=False)
        mapped = None if answer is None else mapped_address(answer.response)
        if mapped is None:
            self.skipped["mapping"] = "no answer from the second server"
            return None
        return mapped == first

    # -------------------------------------------------------------- hairpinning (4.5)

    async def hairpin(self, endpoint: StunEndpoint, mapped: Address) -> bool | None:
        other = await self.fresh()
        answer = await self.ask(other, binding_request(), self.server, silent=False)
        other_mapped = None if answer is None else mapped_address(answer.response)
        if other_mapped is None:
            self.skipped["hairpin"] = "no mapping for the second socket"
            return None
        # Open our own filter toward the other socket's mapping first, so that a NAT that
        # filters hairpinned traffic like outside traffic still lets the probe through.
        indication = StunMessage(Method.BINDING, MessageClass.INDICATION, new_transaction_id())
        endpoint.transport.sendto(indication.encode(), other_mapped)
        return await self.arrives(endpoint, binding_request(), other, mapped)

    async def arrives(
        self, receiver: StunEndpoint, request: StunMessage, sender: StunEndpoint, to: Address
    ) -> bool:
        """Send ``request`` from ``sender`` (retransmitting) and tell whether any copy, or
        its answer, arrives at ``receiver`` before the transaction gives up."""
        arrival = receiver.watch(request.transaction_id)
        sending = asyncio.ensure_future(self.ask(sender, request, to, silent=True))
        try:
            racers: list[asyncio.Future[Any]] = [arrival, sending]
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
            return arrival.done() and not arrival.cancelled()
        finally:
            arrival.cancel()
            sending.cancel()

    # -------------------------------------------------------------- lifetime (4.6)

    async def binding_alive_after(self, wait: float, prober: StunEndpoint) -> bool | None:
        endpoint = await self.fresh()
        answer = await self.ask(endpoint, binding_request(), self.server, silent=False)
        mapped = None if answer is None else mapped_address(answer.response)
        if mapped is None:
            return None
        # The answer just refreshed the binding: the idle time starts now.
        await asyncio.sleep(wait)
        # The server answers to our public IP at this socket's mapped port.
        request = binding_request((AttrType.RESPONSE_PORT, mapped[1]))
        return await self.arrives(endpoint, request, prober, self.server)

    async def binding_lifetime(self, maximum: float) -> tuple[float | None, bool]:
        prober = await self.fresh()
        results: dict[float, bool] = {}

        async def run(waits: list[float]) -> None:
            outcomes = await asyncio.gather(
                *(self.binding_alive_after(wait, prober) for wait in waits)
            )
            results.update(
                {wait: ok for wait, ok in zip(waits, outcomes, strict=True) if ok is not None}
            )

        await run(lifetime.ladder(maximum))
        low, high = lifetime.bracket(results)
        if high is None:
            return (low, True) if results else (None, False)
        await run(lifetime.grid(low, high))
        low, high = lifetime.bracket(results)
        return low, False


async def probe(
    server: Address, *, config: ProbeConfig | None = None, endpoint: StunEndpoint | None = None
) -> NatReport:
    """Classify the NAT between ``endpoint`` (or a fresh socket) and ``server``.

    Pass the peer's own punching socket as ``endpoint`` to learn the mapping that matters
    for it; the probe only adds transactions to it and watches for its own ids.
    """
    config = config or ProbeConfig()
    loop = asyncio.get_running_loop()
    started = loop.time()
    local_ip = config.local_ip or route_local_ip(server)
    prober = _Prober(server, config, local_ip)
    try:
        main = endpoint or await prober.fresh()
        local_port = main.local_address[1]
        local_address = (local_ip, local_port)
        first = await prober.ask(main, binding_request(), server, silent=False)
        mapped = None if first is None else mapped_address(first.response)
        if first is None or mapped is None:
            reason, unreachable = "no mapped address", None
            nat_type = NatType.UNKNOWN
            if first is None:  # blocked UDP, or no server there at all? TCP tells
                silence = f"UDP: nothing within {loop.time() - started:.1f} s"
                tcp = await tcp_failure(server, config.tcp_timeout)
                if tcp is None:
                    nat_type = NatType.UDP_BLOCKED
                    reason = f"no answer from the server ({silence}; TCP: it connects)"
                else:
                    unreachable = f"{silence}; TCP: {tcp}"
                    reason = f"no answer from the server ({unreachable})"
            return NatReport(
                server=server,
                local_address=local_address,
                public_address=None,
                mapping=None,
                mapping_endpoint_independent=None,
                filtering=None,
                hairpin=None,
                binding_lifetime=None,
                nat_type=nat_type,
                skipped={"all": reason},
                duration_ms=round((loop.time() - started) * 1000, 1),
                server_unreachable=unreachable,
            )
        rtt = first.rtt if first.sends == 1 else await prober.measure_rtt(main)
        if rtt is not None:
            prober.tune(rtt)
        other: Address | None = first.response.get(AttrType.OTHER_ADDRESS) or first.response.get(
            AttrType.CHANGED_ADDRESS
        )
        behind_nat = mapped != local_address
        return await _run_tests(
            prober, main, local_address, mapped, other, behind_nat, first, started
        )
    finally:
        prober.close()


async def _run_tests(
    prober: _Prober,
    main: StunEndpoint,
    local_address: Address,
    mapped: Address,
    other: Address | None,
    behind_nat: bool,
    first: ResponseReceived,
    started: float,
) -> NatReport:
    config, server, skipped = prober.config, prober.server, prober.skipped
    loop = asyncio.get_running_loop()

    async def nothing() -> Any:
        return None

    plan = plan_tests(
        has_alternate=other is not None,
        has_second_server=config.second_server is not None,
        hairpin=config.hairpin,
        behind_nat=behind_nat,
        lifetime=config.lifetime_max is not None,
    )
    skipped.update(plan.skipped)
    # (The "is not None" tests repeat the plan's for the type checker.)
    second, lifetime_max = config.second_server, config.lifetime_max
    filtering_task = prober.filtering(other) if plan.filtering and other is not None else nothing()
    mapping_task = (
        prober.mapping(main, mapped, other) if plan.mapping and other is not None else nothing()
    )
    independent_task = (
        prober.mapping_two_servers(main, mapped, second)
        if plan.mapping_two_servers and second is not None
        else nothing()
    )
    hairpin_task = prober.hairpin(main, mapped) if plan.hairpin else nothing()
    lifetime_task = (
        prober.binding_lifetime(lifetime_max)
        if plan.binding_lifetime and lifetime_max is not None
        else nothing()
    )
    filtering, mapping, independent, hairpin, lifetime_result = await asyncio.gather(
        filtering_task, mapping_task, independent_task, hairpin_task, lifetime_task
    )
    mapping, mapping_independent = mapping_verdict(mapping, independent, behind_nat=behind_nat)
    binding_lifetime, lower_bound = (
        lifetime_result if lifetime_result is not None else (None, False)
    )
    return NatReport(
        server=server,
        local_address=local_address,
        public_address=mapped,
        mapping=mapping,
        mapping_endpoint_independent=mapping_independent,
        filtering=filtering,
        hairpin=hairpin,
        binding_lifetime=binding_lifetime,
        binding_lifetime_is_lower_bound=lower_bound,
        nat_type=classic_type(
            reachable=True,
            behind_nat=behind_nat,
            mapping_independent=mapping_independent,
            filtering=filtering,
        ),
        skipped=skipped,
        rtt_ms=round(first.rtt * 1000, 2) if first.sends == 1 else None,
        duration_ms=round((loop.time() - started) * 1000, 1),
    )
