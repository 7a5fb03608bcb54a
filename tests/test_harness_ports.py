"""The harness's free ports: below the kernel's ephemeral range, where no outgoing connection
takes one between the pick and the system's bind; each xdist worker from its own slice."""

from __future__ import annotations

import socket

import pytest

from harness import processes
from harness.processes import ephemeral_ports, free_port_blocks, free_ports, stable_ports


def test_ports_picked_lie_below_the_range_outgoing_connections_use():
    low, _high = ephemeral_ports()
    # the positive control: a port the kernel chooses for a connection lies in that range
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        assert low <= client.getsockname()[1]
    picked = free_ports(20)
    assert len(set(picked)) == 20
    assert all(processes.STABLE_PORTS[0] <= port < low for port in picked), picked
    for port in picked:  # free: each can be bound
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_comes_round_again_only_after_the_others():
    first = free_ports(200)
    second = free_ports(200)
    assert not set(first) & set(second)


def test_a_port_held_is_not_picked(monkeypatch):
    held = free_ports(1)[0]
    with socket.create_server(("127.0.0.1", held)):
        monkeypatch.setattr(processes, "_next_stable", [held])  # the next draw starts there
        picked = free_ports(3)
        assert held not in picked
    monkeypatch.setattr(processes, "_next_stable", [held])
    assert free_ports(1) == [held]  # the positive control: once let go, the same draw takes it
    blocks = free_port_blocks(2, 3)
    assert len(set(blocks)) == 2 and abs(blocks[0] - blocks[1]) >= 3


@pytest.mark.parametrize("workers", [2, 4])
def test_each_xdist_worker_draws_from_its_own_slice(monkeypatch, workers):
    slices = []
    for index in range(workers):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
        slices.append(stable_ports())
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    whole = stable_ports()
    assert slices[0][0] == whole[0]
    for (low, high), (next_low, _next_high) in zip(slices, slices[1:], strict=False):
        assert low < high <= next_low
    assert slices[-1][1] <= whole[1]
