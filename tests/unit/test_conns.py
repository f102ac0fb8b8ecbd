"""The per-listener connection cap (wghybrid/_conns.py), with fake transports."""

from __future__ import annotations

import asyncio

import pytest

from wghybrid._conns import REFUSAL, ConnectionGuard, _Conn, _Refuse, limits_for

pytestmark = pytest.mark.unit


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def connect(guard: ConnectionGuard, age: float = 10.0) -> tuple[asyncio.Protocol, FakeTransport]:
    proto = guard.factory(Inner)()
    transport = FakeTransport()
    proto.connection_made(transport)
    if isinstance(proto, _Conn):
        proto.accepted -= age
    return proto, transport


def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    busy: set[object] = set()
    guard = ConnectionGuard("test", 2, busy)
    first, t1 = connect(guard)
    second, t2 = connect(guard)
    assert isinstance(first, _Conn) and isinstance(second, _Conn)
    busy.add(first.inner)  # a request in a handler: never evicted
    third, _ = connect(guard)
    assert isinstance(third, _Conn)
    assert t2.closed and not t1.closed and guard.evicted == 1
    assert len(guard.conns) == 2


def test_when_every_connection_is_busy_the_new_one_is_refused_at_once() -> None:
    busy: set[object] = set()
    guard = ConnectionGuard("test", 2, busy)
    for _ in range(2):
        proto, _ = connect(guard)
        assert isinstance(proto, _Conn)
        busy.add(proto.inner)
    refused, transport = connect(guard)
    assert isinstance(refused, _Refuse)
    assert transport.written == REFUSAL and transport.closed
    assert REFUSAL.startswith(b"HTTP/1.1 503 ") and guard.refused == 1


def test_young_connections_are_not_evicted() -> None:
    guard = ConnectionGuard("test", 1, set())
    connect(guard, age=0.0)
    refused, _ = connect(guard)
    assert isinstance(refused, _Refuse)


def test_a_closed_connection_frees_its_slot() -> None:
    guard = ConnectionGuard("test", 1, set())
    proto, _ = connect(guard, age=0.0)
    proto.connection_lost(None)
    assert isinstance(proto, _Conn) and proto.inner.lost  # type: ignore[attr-defined]
    again, _ = connect(guard, age=0.0)
    assert isinstance(again, _Conn)


@pytest.mark.parametrize(
    "listeners, nofile, cap", [(1, 1024, 128), (2, 1024, 64), (2, 16384, 1024), (1, 64, 8)]
)
def test_limits_leave_most_descriptors_to_the_daemon(
    listeners: int, nofile: int, cap: int
) -> None:
    got, backlog = limits_for(listeners, nofile)
    assert got == cap == backlog
    assert listeners * (got + backlog) <= nofile // 2 or nofile < 128
