"""The metrics and the Grafana dashboard against a real Prometheus (Debian's package).

The daemon runs on the simulated gateway with its API on TCP and a read-only token; a
Prometheus of its own (a temporary config, its own data directory, a free port on
127.0.0.1) scrapes it every second with that token. Once it has scraped a few times,
every PromQL expression of dashboards/wghybrid.json goes through Prometheus's query API
and must return data: the dashboard's names, labels and joins are the exporter's.

Without /usr/bin/prometheus (scripts/setup --test installs it) the test skips, saying
so, unless CI is set: there it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_daemon import DaemonProcess

pytestmark = pytest.mark.sim

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "wghybrid.json"
PROMETHEUS = "/usr/bin/prometheus"
TOKEN = "prometheus-scrape-token-0123456789"
SCRAPES = 5
"""Scrapes to wait for before querying: rate() and increase() need two samples."""
WAIT = 60.0
GRAFANA = {"$__rate_interval": "1m", "$interface": ".*"}
"""What Grafana would put in for the dashboard's variables."""


def prometheus_binary() -> str:
    if os.access(PROMETHEUS, os.X_OK):
        return PROMETHEUS
    found = shutil.which("prometheus")
    if found:
        return found
    why = f"{PROMETHEUS} is missing (Debian's prometheus package: scripts/setup --test)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, variables filled in."""
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, (panel["title"], expr)
            out.append((panel["title"], expr))
    return out


def test_the_dashboard_has_the_panels_operators_asked_for() -> None:
    titles = " | ".join(title for title, _ in dashboard_queries()).lower()
    for what in ("throughput by mode", "vanilla pool", "per-core load", "mode changes",
                 "top peers by rate", "top peers by cpu"):
        assert what in titles


class Processes:
    """The daemon and the Prometheus a test starts; the fixture's finalizer kills both."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.daemon: DaemonProcess | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.prometheus_log = tmp / "prometheus" / "prometheus.log"

    def start_daemon(self) -> tuple[DaemonProcess, int, Path]:
        token = self.tmp / "read-token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        port = free_port()
        self.daemon = DaemonProcess(self.tmp, extra=("--listen", f"127.0.0.1:{port}",
                                                     "--read-token-file", str(token)))
        self.daemon.start()
        return self.daemon, port, token

    def start_prometheus(self, binary: str, target_port: int, token: Path) -> str:
        """Prometheus on a free port of 127.0.0.1, its own config and data directory,
        scraping the daemon every second with the read-only token; its base URL."""
        home = self.tmp / "prometheus"
        (home / "data").mkdir(parents=True)
        config = home / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: wghybrid\n"
            "    authorization:\n"
            f"      credentials_file: {token}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = free_port()
        with self.prometheus_log.open("wb") as out:
            self.prometheus = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
            )
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        proc = self.prometheus
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        d = self.daemon
        if d is not None and d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


async def query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body = await r.json(content_type=None)
    assert r.status == 200 and body.get("status") == "success", (expr, r.status, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for_scrapes(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Until Prometheus has scraped the daemon SCRAPES times, each one up (bounded)."""
    end = time.monotonic() + WAIT
    last: object = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited {proc.returncode}:\n{log.read_text()}")
        try:
            up = await query(session, base, 'sum_over_time(up{job="wghybrid"}[5m])')
            if up and float(up[0]["value"][1]) >= SCRAPES:
                return
            last = up
        except (aiohttp.ClientError, AssertionError) as exc:
            last = exc
        await asyncio.sleep(0.5)
    async with session.get(f"{base}/api/v1/targets") as r:
        targets = await r.text()
    raise AssertionError(f"no {SCRAPES} good scrapes in {WAIT:g} s (last: {last!r});\n"
                         f"targets: {targets}\nlog: {log.read_text()}")


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    processes: Processes,
) -> None:
    binary = prometheus_binary()  # a failure (under CI) or a skip, before starting anything
    daemon, port, token = processes.start_daemon()
    await daemon.wait_ticks(1)
    base = processes.start_prometheus(binary, port, token)
    assert processes.prometheus is not None
    proc, log = processes.prometheus, processes.prometheus_log
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await wait_for_scrapes(session, base, proc, log)
        # every scrape parsed and none failed
        assert await query(session, base, 'up{job="wghybrid"} == 0') == []
        empty = []
        for title, expr in dashboard_queries():
            if not await query(session, base, expr):
                empty.append(f"{title}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
        # and the data is the simulated gateway's: traffic, five peers, their names
        moved = await query(session, base, "sum(rate(wghybrid_interface_receive_bytes_total[1m]))")
        assert float(moved[0]["value"][1]) > 0
        peers = await query(session, base, "sum(wghybrid_interface_peers)")
        assert float(peers[0]["value"][1]) == 5
        named = await query(session, base, 'count(wghybrid_peer_info{name=~"mouse-.*"})')
        assert float(named[0]["value"][1]) == 4
    assert daemon.stop() == 0
