"""The proxy's data path, without kubectl: loopback servers stand in for tunnels."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import List, Optional, Tuple

import pytest

import kubectl_vibe_pf as vibe

# -- loopback stand-ins for a pod behind a tunnel ----------------------------------------------


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(1 << 18)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()
    writer.close()


async def start_server(handler) -> Tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def transfer(port: int, payload: bytes, chunk: int = 1 << 16) -> bytes:
    """Send payload, half-close, and read everything back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for offset in range(0, len(payload), chunk):
            writer.write(payload[offset : offset + chunk])
            await writer.drain()
        writer.write_eof()

    received = bytearray()

    async def receive() -> None:
        while True:
            data = await reader.read(1 << 18)
            if not data:
                return
            received.extend(data)

    await asyncio.gather(send(), receive())
    writer.close()
    return bytes(received)


class ScriptedSource(vibe.UpstreamSource):
    """Leases from a list of ports, in turn; verdicts scripted per port."""

    def __init__(self, ports: List[int], verdicts: Optional[dict] = None) -> None:
        self.ports = list(ports)
        self.verdicts = verdicts or {}
        self.ready = asyncio.Event()
        self.ready.set()
        self.closed: List[int] = []  # ports of leases whose links ended cleanly
        self.verdict_delay = 0.0

    async def acquire(self, key: int, timeout: float) -> vibe.Lease:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise vibe.NoUpstream("no tunnel within %.1fs: pod is starting" % timeout) from None
        port = self.ports[0] if len(self.ports) == 1 else self.ports.pop(0)
        return vibe.Lease(vibe.StaticTunnel("127.0.0.1", port), port)

    def link_closed(self, lease: vibe.Lease, link: vibe.Link) -> None:
        self.closed.append(lease.tunnel.port)

    async def verdict(
        self, lease: vibe.Lease, wait: float, exc: Optional[BaseException] = None
    ) -> Optional[vibe.Verdict]:
        await asyncio.sleep(self.verdict_delay)  # as a real tunnel takes a moment to die
        return self.verdicts.get(lease.tunnel.port)


def make_proxy(source: vibe.UpstreamSource, wait_timeout: float = 5.0) -> vibe.ForwardProxy:
    return vibe.ForwardProxy(
        source, 0, vibe.RelayBuffer(vibe.RELAY_BUFFER_BYTES), wait_timeout=wait_timeout
    )


async def settle(proxy: vibe.ForwardProxy) -> None:
    for _ in range(200):
        if not proxy.links:
            return
        await asyncio.sleep(0.01)


# -- specifications ------------------------------------------------------------------------------


async def test_relays_32_mib_both_ways_byte_exact_and_counts_them() -> None:
    server, upstream = await start_server(echo_handler)
    forward = await vibe.open_static_forward(("127.0.0.1", upstream))
    payload = os.urandom(32 * 1024 * 1024)

    echoed = await transfer(forward.port, payload)

    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    await settle(forward.proxy)
    stats = forward.stats
    assert (stats.bytes_up, stats.bytes_down) == (len(payload), len(payload))
    assert (stats.opened, stats.active, stats.closed, stats.failed, stats.reset) == (1, 0, 1, 0, 0)
    await forward.close()
    server.close()


async def test_half_close_lets_the_server_answer_after_the_client_finished_sending() -> None:
    async def answer_after_eof(reader, writer) -> None:
        body = await reader.read()  # until the client's EOF
        writer.write(b"got %d bytes" % len(body))
        await writer.drain()
        writer.close()

    server, upstream = await start_server(answer_after_eof)
    forward = await vibe.open_static_forward(("127.0.0.1", upstream))

    answer = await transfer(forward.port, b"x" * 100_000)

    assert answer == b"got 100000 bytes"
    await forward.close()
    server.close()


async def test_200_concurrent_connections_are_all_byte_exact() -> None:
    server, upstream = await start_server(echo_handler)
    forward = await vibe.open_static_forward(("127.0.0.1", upstream))
    payloads = [os.urandom(64 * 1024 + n) for n in range(200)]

    results = await asyncio.gather(*(transfer(forward.port, p) for p in payloads))

    assert all(r == p for r, p in zip(results, payloads))
    await settle(forward.proxy)
    assert forward.stats.opened == 200 and forward.stats.closed == 200
    await forward.close()
    server.close()


async def test_a_connection_made_while_no_tunnel_is_ready_waits_and_then_succeeds() -> None:
    server, upstream = await start_server(echo_handler)
    source = ScriptedSource([upstream])
    source.ready.clear()
    proxy = make_proxy(source)
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    pending = asyncio.ensure_future(transfer(proxy.port, b"hello while reconnecting"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    source.ready.set()

    assert await pending == b"hello while reconnecting"
    await proxy.close(0)
    server.close()


async def test_a_connection_that_gets_no_tunnel_in_time_is_closed_and_counted_failed() -> None:
    source = ScriptedSource([1])
    source.ready.clear()
    proxy = make_proxy(source, wait_timeout=0.2)
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    answer = await transfer(proxy.port, b"anyone there?")

    assert answer == b""
    await settle(proxy)
    assert proxy.stats.failed == 1
    [(cause, count)] = proxy.stats.causes.items()
    assert cause.startswith("failed: no tunnel within") and count == 1
    await proxy.close(0)


async def test_unanswered_bytes_are_replayed_on_the_next_tunnel_when_the_first_one_died() -> None:
    async def dying_tunnel(reader, writer) -> None:
        await reader.read(5)
        writer.close()  # closes before the pod said a word

    dead_server, dead = await start_server(dying_tunnel)
    good_server, good = await start_server(echo_handler)
    lost = vibe.Verdict("pod gone", retry=True, outcome=vibe.LinkOutcome.RESET)
    source = ScriptedSource([dead, good], verdicts={dead: lost})
    proxy = make_proxy(source)
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    answer = await transfer(proxy.port, b"GET / HTTP/1.1\r\n\r\n")

    assert answer == b"GET / HTTP/1.1\r\n\r\n"
    await settle(proxy)
    assert proxy.stats.replayed == 1 and proxy.stats.closed == 1
    await proxy.close(0)
    dead_server.close()
    good_server.close()


async def test_nothing_listening_in_the_pod_is_a_failed_connection_not_a_replay() -> None:
    async def refusing_tunnel(reader, writer) -> None:
        writer.close()

    server, port = await start_server(refusing_tunnel)
    refused = vibe.Verdict("nothing listening on pod port 80", False, vibe.LinkOutcome.FAILED)
    proxy = make_proxy(ScriptedSource([port], verdicts={port: refused}))
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    assert await transfer(proxy.port, b"hi") == b""
    await settle(proxy)
    assert proxy.stats.replayed == 0
    assert proxy.stats.causes == {"failed: nothing listening on pod port 80": 1}
    await proxy.close(0)
    server.close()


async def test_a_server_that_closes_without_answering_on_a_healthy_tunnel_is_a_clean_close() -> (
    None
):
    async def silent(reader, writer) -> None:
        await reader.read(2)
        writer.close()

    server, port = await start_server(silent)
    proxy = make_proxy(ScriptedSource([port]))
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    assert await transfer(proxy.port, b"hi") == b""
    await settle(proxy)
    assert (proxy.stats.closed, proxy.stats.failed, proxy.stats.reset) == (1, 0, 0)
    await proxy.close(0)
    server.close()


async def test_a_busy_port_gives_kubectls_listener_error_text() -> None:
    server, port = await start_server(echo_handler)
    proxy = make_proxy(ScriptedSource([port]))

    errors = await proxy.listen(["127.0.0.1"], port, vibe.every_address_bound)

    assert errors == [
        "unable to create listener: Error listen tcp4 127.0.0.1:%d: bind: address already in use"
        % port
    ]
    server.close()


async def test_localhost_mode_is_satisfied_by_one_of_its_two_addresses() -> None:
    server, port = await start_server(echo_handler)  # 127.0.0.1:port is taken, ::1 is not
    proxy = make_proxy(ScriptedSource([port]))

    errors = await proxy.listen(["127.0.0.1", "::1"], port, lambda bound: any(bound.values()))

    if not proxy.addresses:  # no IPv6 loopback on this machine: both failed, as kubectl says
        assert len(errors) == 2
    else:
        assert errors == [] and proxy.addresses == ["::1"] and proxy.port == port
    await proxy.close(0)
    server.close()


async def test_closing_with_a_grace_period_ends_connections_that_did_not_finish() -> None:
    server, upstream = await start_server(echo_handler)
    forward = await vibe.open_static_forward(("127.0.0.1", upstream))
    reader, writer = await asyncio.open_connection("127.0.0.1", forward.port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"

    await forward.close(grace=0.1)

    assert await reader.read() == b""
    assert (forward.stats.closed, forward.stats.reset, forward.stats.active) == (1, 0, 0)
    writer.close()
    server.close()


@pytest.mark.parametrize(
    "samples, width, expected",
    [
        ([0] * 60, 10, " " * 10),
        ([0] * 59 + [100], 6, "     █"),
        ([10, 20, 30, 40], 4, "▂▄▆█"),
    ],
)
def test_sparkline_scales_to_the_busiest_bucket(samples, width, expected) -> None:
    assert vibe.sparkline(samples, width) == expected


def test_live_screen_rewrites_only_changed_lines() -> None:
    import io

    out = io.StringIO()
    screen = vibe.LiveScreen(out)
    screen.show(["a", "b", "c"])
    first = out.getvalue()
    screen.show(["a", "B", "c"])
    update = out.getvalue()[len(first) :]

    assert first.endswith("a\nb\nc\n")
    assert update == "\x1b[2FB\x1b[K\x1b[2E"
    screen.show(["a", "B", "c"])
    assert out.getvalue()[len(first) + len(update) :] == ""


def test_uptime_counts_only_ready_time() -> None:
    clock = vibe.UptimeClock()
    clock.up(100.0)
    clock.down(130.0)
    clock.up(140.0)
    assert clock.percent(150.0, 100.0) == pytest.approx(80.0)


async def test_inspection_summarises_http_seen_on_the_relay_including_the_first_request() -> None:
    async def tiny_http(reader, writer) -> None:
        while await reader.readline():
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno")
            await writer.drain()
        writer.close()

    server, upstream = await start_server(tiny_http)
    forward = await vibe.open_static_forward(("127.0.0.1", upstream), inspect=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", forward.port)
    for n in range(3):
        writer.write(b"GET /orders/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (1000 + n))
        await reader.readuntil(b"\r\n\r\nno")
    writer.close()
    await settle(forward.proxy)

    inspection = forward.inspection
    [line] = inspection.summary_lines()
    assert line.startswith("HTTP: 3 requests") and "GET /orders/:id" in line
    assert any("503" in problem for problem in inspection.problems())
    await forward.close()
    server.close()


def port_snapshot(**stats: int) -> vibe.PortSnapshot:
    return vibe.PortSnapshot(
        key=0,
        addresses=("127.0.0.1",),
        port=8080,
        remote_port=80,
        stats=vibe.StatsSnapshot(**stats),
        activity=(0,) * 60,
    )


def forward_snapshot(*ports: vibe.PortSnapshot, **fields) -> vibe.ForwardSnapshot:
    defaults = dict(
        ident=1,
        label="svc/web",
        namespace="prod",
        state=vibe.ForwardState.STARTING,
        attempt=0,
        reason="",
        pod="web-abc",
        engine="native",
        ports=ports or (port_snapshot(),),
    )
    defaults.update(fields)
    return vibe.ForwardSnapshot(**defaults)


def test_the_live_view_fits_the_terminal_and_honours_no_color(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    forward = forward_snapshot(port_snapshot(bytes_down=3 * 1024 * 1024))
    live = vibe.LiveView(io.StringIO(), started=0.0)
    live(vibe.SessionEvent(0.0, vibe.EventKind.TUNNEL_LOST, "svc/web", "the pod is gone"))

    lines = live.render_lines([forward], now=75.0, width=100)

    text = "\n".join(lines)
    assert "\x1b[" not in text
    assert all(len(line) <= 100 for line in lines)
    assert "1m15s" in lines[0] and "starting" in text and "3.0 MiB" in text
    assert "svc/web the pod is gone" in text


def test_the_summary_names_usage_problems_and_next_steps() -> None:
    port = port_snapshot(opened=5, closed=4, reset=1,
                         causes=(("reset: the pod (or its sandbox) is gone", 1),))  # fmt: skip
    note = "pod web-abc: container app restarted 1 time (last: OOMKilled, exit code 137)"
    forward = forward_snapshot(
        port,
        reconnects=(("the pod (or its sandbox) is gone", 2),),
        pod_notes=(note,),
        troubled_pods=("web-abc",),
    )

    lines = vibe.build_summary([forward], duration=60.0)

    assert lines[0] == "kubectl vibe port-forward: 1m00s"
    assert "5 connections: 4 closed, 0 failed, 1 reset" in lines[2]
    assert "reconnects 2 (the pod (or its sandbox) is gone ×2)" in lines[3]
    assert "  - " + note in lines
    assert "  - 1 connections reset: the pod (or its sandbox) is gone" in lines
    assert "  - kubectl logs web-abc -n prod --previous" in lines


def test_the_summary_has_a_section_per_forward_and_names_a_failed_one() -> None:
    web = forward_snapshot(port_snapshot(opened=2, closed=2), state=vibe.ForwardState.READY)
    db = forward_snapshot(
        vibe.PortSnapshot(1, ("127.0.0.1",), 5432, 5432, vibe.StatsSnapshot()),
        ident=2, label="svc/db", pod="db-0", state=vibe.ForwardState.FAILED,
        error="error upgrading connection: pods \"db-0\" is forbidden",
    )  # fmt: skip

    lines = vibe.build_summary([web, db], duration=10.0)

    assert "  127.0.0.1:8080 → svc/web :80 (pod web-abc)" in lines
    assert "  127.0.0.1:5432 → svc/db :5432 (pod db-0)" in lines
    assert '  svc/db: failed: error upgrading connection: pods "db-0" is forbidden' in lines


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_a_narrow_terminal_keeps_status_target_traffic_and_connections(
    monkeypatch, width: int
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    forward = forward_snapshot(port_snapshot(bytes_down=3 * 1024 * 1024, opened=12))

    lines = vibe.LiveView(io.StringIO(), started=0.0).render_lines([forward], now=5.0, width=width)

    row = lines[2]
    assert all(len(line) <= width for line in lines)
    assert "starting" in row and "127.0.0.1:8080 → svc/web" in row
    assert "3.0 MiB" in row and "0/12" in row


def test_the_live_view_has_a_row_per_port_of_every_forward(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    web = forward_snapshot(state=vibe.ForwardState.READY)
    db = forward_snapshot(
        vibe.PortSnapshot(0, ("127.0.0.1",), 5432, 5432, vibe.StatsSnapshot()),
        ident=2, label="svc/db", pod="db-0", state=vibe.ForwardState.RECONNECTING,
        attempt=2, reason="the pod (or its sandbox) is gone",
    )  # fmt: skip

    lines = vibe.LiveView(io.StringIO(), started=0.0).render_lines([web, db], now=5.0, width=160)

    assert any("svc/web (web-abc) :80" in line and "ready" in line for line in lines)
    assert any("svc/db (db-0) :5432" in line and "reconnecting #2" in line for line in lines)
    assert any("↻ svc/db: the pod (or its sandbox) is gone" in line for line in lines)


async def test_an_http_keep_alive_at_rest_moves_to_the_next_tunnel_when_its_tunnel_dies() -> None:
    async def answers_once_then_dies(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()  # the tunnel dies while the connection is idle

    async def answers(reader, writer) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
            await writer.drain()
        writer.close()

    dying_server, dying = await start_server(answers_once_then_dies)
    good_server, good = await start_server(answers)
    lost = vibe.Verdict("pod gone", retry=True, outcome=vibe.LinkOutcome.RESET)
    source = ScriptedSource([dying, good], verdicts={dying: lost})
    proxy = vibe.ForwardProxy(
        source, 0, vibe.RelayBuffer(vibe.RELAY_BUFFER_BYTES), wait_timeout=5.0,
        inspector_factory=vibe.ForwardInspection(80).new_link,
    )  # fmt: skip
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

    source.verdict_delay = 0.3
    writer.write(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await reader.readuntil(b"one")
    await asyncio.sleep(0.15)  # the tunnel is closing; its verdict is not in yet
    writer.write(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    second = await asyncio.wait_for(reader.readuntil(b"two"), 5)

    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert (proxy.stats.replayed, proxy.stats.reset, proxy.stats.opened) == (1, 0, 1)
    writer.close()
    await proxy.close(0)
    dying_server.close()
    good_server.close()


async def test_only_cleanly_closed_links_are_offered_for_recounting_when_a_tunnel_dies() -> None:
    async def refusing_tunnel(reader, writer) -> None:
        writer.close()

    good_server, good = await start_server(echo_handler)
    bad_server, bad = await start_server(refusing_tunnel)
    refused = vibe.Verdict("nothing listening on pod port 80", False, vibe.LinkOutcome.FAILED)
    source = ScriptedSource([bad, good], verdicts={bad: refused})
    proxy = make_proxy(source)
    await proxy.listen(["127.0.0.1"], 0, vibe.every_address_bound)

    assert await transfer(proxy.port, b"refused") == b""  # FAILED: not a clean close
    await settle(proxy)
    assert await transfer(proxy.port, b"echoed") == b"echoed"  # CLOSED cleanly
    await settle(proxy)

    assert source.closed == [good]
    await proxy.close(0)
    good_server.close()
    bad_server.close()


def test_a_balanced_forward_shows_each_pod_in_the_view_and_the_summary(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    shares = (
        vibe.PodShare("web-a", True, 2, 101, 2048, 4096),
        vibe.PodShare("web-b", False, 0, 99, 1024, 3072),
    )
    forward = forward_snapshot(state=vibe.ForwardState.READY, pod="web-a", pods=shares)

    lines = vibe.LiveView(io.StringIO(), started=0.0).render_lines([forward], now=5.0, width=160)
    summary = vibe.build_summary([forward], duration=10.0)

    assert "  ⇉ web-a: 2 open, 101 connections, ↑ 2.0 KiB ↓ 4.0 KiB" in lines
    assert "  ⇉ web-b (left): 0 open, 99 connections, ↑ 1.0 KiB ↓ 3.0 KiB" in lines
    assert "    balanced: web-a: 2 open, 101 connections, ↑ 2.0 KiB ↓ 4.0 KiB" in summary


def test_a_target_still_trying_to_start_has_a_row_and_a_summary_line(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    pending = forward_snapshot(
        ports=(), label="svc/later", pod="", state=vibe.ForwardState.RECONNECTING, attempt=2,
        reason='not started: Error from server (NotFound): services "later" not found',
    )  # fmt: skip
    pending = vibe._replace_record(pending, ports=())

    lines = vibe.LiveView(io.StringIO(), started=0.0).render_lines([pending], now=5.0, width=160)
    summary = vibe.build_summary([pending], duration=10.0)

    assert any("– → svc/later" in line and "reconnecting #2" in line for line in lines)
    assert '  svc/later: not started: Error from server (NotFound): services "later" not found' in (
        summary
    )
