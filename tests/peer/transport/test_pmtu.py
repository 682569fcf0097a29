"""Path MTU probing (RFC 8899): the search on its own, then a transport pair over a path
that carries less than a full Ethernet frame."""

from __future__ import annotations

import pytest

from peer.transport.config import TransportConfig
from peer.transport.pmtu import MtuSearch
from tests.peer.transport.pair import Pair


def _search(path_mtu: int, *, base: int = 1175, ceiling: int = 1447) -> tuple[int, int]:
    """Run a search against a path carrying packets up to ``path_mtu``: (size, probes)."""
    search = MtuSearch(base, ceiling)
    search.restart(True)
    probes = 0
    while (size := search.next_probe()) is not None:
        probes += 1
        search.on_sent(size)
        if size <= path_mtu:
            search.on_acked(size)
        else:
            search.on_lost(size)
    return search.size, probes


def test_a_path_that_carries_the_ceiling_takes_one_probe() -> None:
    assert _search(1500) == (1447, 1)


@pytest.mark.parametrize("path_mtu", [1175, 1200, 1300, 1400, 1446])
def test_the_search_ends_within_the_resolution_below_the_path(path_mtu: int) -> None:
    size, probes = _search(path_mtu)
    assert path_mtu - 16 < size <= path_mtu or size == 1175
    assert size <= path_mtu
    assert probes <= 3 * 6  # (three losses per size that fails, a halving each)


def test_a_random_loss_does_not_lower_the_ceiling() -> None:
    search = MtuSearch(1175, 1447)
    search.restart(True)
    for _ in range(2):  # two of the three allowed
        size = search.next_probe()
        assert size == 1447
        search.on_sent(size)
        search.on_lost(size)
    size = search.next_probe()
    assert size == 1447
    search.on_sent(size)
    search.on_acked(size)
    assert search.size == 1447 and not search.searching


def test_a_new_path_starts_from_the_base_and_ignores_old_probes() -> None:
    search = MtuSearch(1175, 1447)
    search.restart(True)
    search.on_sent(1447)
    search.on_acked(1447)
    search.restart(True)
    assert search.size == 1175
    search.on_lost(1447)  # (the old path's, already decided)
    assert search.next_probe() == 1447
    search.restart(False)
    assert search.next_probe() is None


@pytest.mark.parametrize("path_mtu", [None, 1300])
def test_a_transport_pair_grows_its_packets_to_what_the_path_carries(
    path_mtu: int | None,
) -> None:
    pair = Pair(TransportConfig(), delay=0.001)
    largest_delivered = [0]

    def too_large(sender: object, packet: bytes) -> bool:
        if path_mtu is not None and len(packet) > path_mtu:
            return True
        largest_delivered[0] = max(largest_delivered[0], len(packet))
        return False

    pair.drop = too_large
    pair.a.probe_mtu()
    stream = pair.a.open_stream()
    pair.a.write(stream, bytes(2_000_000), end_stream=True)
    got = bytearray()

    pair.run(lambda: pair.read_stream(stream, got) and not pair.a.probing_mtu, max_time=30)
    assert len(got) == 2_000_000
    expected = 1447 if path_mtu is None else path_mtu
    assert expected - 16 < pair.a.packet_size <= expected
    assert largest_delivered[0] == pair.a.packet_size
    # The probes lost on the narrower path were no congestion: the window still grew.
    assert pair.a.congestion_window > TransportConfig().recovery.initial_window_packets * 1200


def test_a_new_path_starts_at_the_base_size() -> None:
    pair = Pair(TransportConfig(), delay=0.001)
    pair.a.probe_mtu()
    pair.a.send_message(bytes(100_000))
    pair.run(lambda: pair.a.packet_size == 1447 and not pair.a.buffered)
    pair.a.path_changed(pair.now)
    assert pair.a.packet_size == TransportConfig().max_packet_size
