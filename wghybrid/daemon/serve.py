"""Starting and stopping `wghybrid run`: the data plane, the locks, the listeners, the signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import stat
from pathlib import Path
from typing import Any

from aiohttp import web

from wghybrid._conns import ConnectionGuard, GuardedSite, limits_for
from wghybrid.daemon.api import BUSY, Access, build_app
from wghybrid.daemon.config import (
    IDLE_TIMEOUT,
    KERNEL_LOCK,
    LINGER,
    ConfigError,
    RunConfig,
    _policy_loader,
    config_from_args,
)
from wghybrid.daemon.persist import PersistentSim
from wghybrid.daemon.service import Daemon
from wghybrid.daemon.state import (
    LOCK_FILE,
    StateError,
    StateStore,
)
from wghybrid.dataplane import (
    DataPlane,
    DataPlaneError,
    configure_nic_steering,
)
from wghybrid.sim import load_scenario

log = logging.getLogger("wghybrid.daemon")
loop_log = logging.getLogger("wghybrid.asyncio")


async def _open_dataplane(cfg: RunConfig) -> tuple[DataPlane, int, dict[bytes, str]]:
    """The data plane, the number of online cores, and names it knows for peers."""
    if cfg.backend == "sim":
        try:
            scenario = load_scenario(cfg.scenario)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--scenario {cfg.scenario}: {exc}") from None
        path = cfg.state_dir / "sim-gateway.json"
        cfg.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        names = {t.public_key: t.name for t in scenario.tunnels}
        sim = PersistentSim(scenario, path, cfg.sim_speed, persist=not cfg.dry_run)
        return sim, int(scenario.cores), names
    try:
        from wghybrid.dataplane import kernel

        open_kernel = kernel.open_dataplane
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--backend kernel is not available in this build: {exc}") from None
    try:
        dataplane: DataPlane = await open_kernel()
    except (OSError, DataPlaneError) as exc:
        raise ConfigError(f"--backend kernel: {exc}") from None
    return dataplane, os.cpu_count() or 1, {}


async def _check_socket_free(path: Path) -> None:
    """Refuse to steal the socket of a daemon that still answers; remove a stale one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--socket {path}: exists and is not a socket")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (OSError, TimeoutError):
        path.unlink(missing_ok=True)
        return
    writer.close()
    raise ConfigError(f"another daemon is listening on {path}")


def acquire_lock(path: Path, what: str) -> int:
    """An exclusive flock on `path` (created if need be, our pid written in it), held by
    the returned descriptor until it is closed or the process ends, however it ends."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    except OSError as exc:
        raise ConfigError(f"cannot lock {what}: {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"cannot lock {what}: {path}: {exc.strerror or exc}") from None
        pid = f"pid {other}" if other.isdigit() else "its pid not yet written"
        raise ConfigError(
            f"another wghybrid daemon ({pid}) is running on {what} (it holds {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _locks(cfg: RunConfig) -> list[int]:
    """One daemon per state directory; one per kernel data plane (a dry run drives
    nothing, so it may watch beside the real one)."""
    try:
        cfg.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--state-dir {cfg.state_dir}: {exc.strerror or exc}") from None
    fds = [acquire_lock(cfg.state_dir / LOCK_FILE, f"the state directory {cfg.state_dir}")]
    if cfg.backend == "kernel" and not cfg.dry_run:
        try:
            lock = Path(KERNEL_LOCK)
            with contextlib.suppress(FileExistsError):
                lock.parent.mkdir(mode=0o750, parents=True)
            fds.append(acquire_lock(lock, "the kernel data plane"))
        except BaseException:
            os.close(fds[0])
            raise
    return fds


async def serve(cfg: RunConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT (or a fatal error); the exit status."""
    locks = _locks(cfg)
    try:
        return await _serve_locked(cfg)
    finally:
        for fd in locks:
            os.close(fd)


async def _serve_locked(cfg: RunConfig) -> int:
    store = StateStore(cfg.state_dir)
    try:
        state = store.load()
    except (StateError, OSError) as exc:
        raise ConfigError(f"cannot read the state: {exc}") from None
    dataplane, online, names = await _open_dataplane(cfg)
    try:
        loader = _policy_loader(cfg.policy, online, names)
        try:
            policy = await asyncio.to_thread(loader)
        except Exception as exc:
            raise ConfigError(f"bad policy: {exc}") from None
        await configure_nic_steering(dataplane, policy.placement.nic_steering)
        daemon = Daemon(
            dataplane=dataplane,
            policy=policy,
            load_policy=loader,
            store=store,
            backend=cfg.backend,
            dry_run=cfg.dry_run,
            op_timeout=cfg.op_timeout,
            sample_timeout=cfg.sample_timeout,
        )
        daemon.restore_state(state)
    except BaseException:
        await dataplane.close()
        raise
    return await _serve_daemon(daemon, cfg)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: one rate-limited line (an accept() that failed,
    a transport's error, a task nobody awaited), not asyncio's multi-line report."""
    exc = context.get("exception")
    message = context.get("message") or "event loop error"
    loop_log.warning("%s%s", message, f": {type(exc).__name__}: {exc}" if exc else "")


async def _serve_daemon(daemon: Daemon, cfg: RunConfig) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    loop.set_exception_handler(_loop_error)
    daemon.manage_gc = True
    access = Access(
        admin_token=cfg.token,
        read_token=cfg.read_token,
        admin_uids=frozenset({0, os.geteuid()}),
        admin_gids=cfg.admin_gids,
    )
    cap, backlog = limits_for(1 if cfg.listen is None else 2)
    # Event streams (GET /v1/events?follow=1) hold a connection each and are never
    # evicted (they are mid-request): a quarter of one listener's cap at most.
    app = build_app(daemon, access=access, max_streams=max(1, min(64, cap // 4)))
    app.cleanup_ctx.append(daemon.loop_ctx)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        # aiohttp's own limits: keepalive_timeout also closes a connection that sends no
        # complete request head in time (a header timeout); the rest bound what one
        # request head may hold. Bad requests are logged by the clients logger, one
        # rate-limited line each (wghybrid/_log.py), never an aiohttp traceback.
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=LINGER,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
        logger=logging.getLogger("wghybrid.clients"),
    )
    sock_inode: int | None = None
    try:
        sock_dir = cfg.socket.parent
        if not sock_dir.exists():
            sock_dir.mkdir(mode=0o750, parents=True)
        await _check_socket_free(cfg.socket)
        await runner.setup()
        unix_guard = ConnectionGuard(f"unix socket {cfg.socket}", cap, app[BUSY])
        try:
            await GuardedSite(runner, unix_guard, path=str(cfg.socket), backlog=backlog).start()
        except OSError as exc:
            raise ConfigError(f"--socket {cfg.socket}: {exc.strerror or exc}") from None
        os.chmod(cfg.socket, 0o660)
        sock_inode = cfg.socket.lstat().st_ino
        log.info(
            "wghybrid %s: backend %s, policy %r (%s), API on %s%s",
            daemon.version,
            daemon.backend,
            daemon.policy.name,
            daemon.policy.source,
            cfg.socket,
            " (dry run)" if daemon.dry_run else "",
        )
        if cfg.listen is not None:
            host, port = cfg.listen
            tcp_guard = ConnectionGuard(f"TCP {host}:{port}", cap, app[BUSY])
            try:
                await GuardedSite(
                    runner, tcp_guard, host=host, port=port, ssl_context=cfg.tls, backlog=backlog
                ).start()
            except OSError as exc:
                raise ConfigError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
            log.info(
                "API also on %s://%s:%d (bearer token required: %s)",
                "https" if cfg.tls else "http",
                host,
                port,
                " or ".join(
                    role
                    for role, t in (("admin", cfg.token), ("read-only", cfg.read_token))
                    if t is not None
                ),
            )
        log.info("at most %d connections per listener, backlog %d", cap, backlog)
        await daemon.stopping.wait()
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await daemon.shutdown()
        if sock_inode is not None:
            with contextlib.suppress(OSError):
                if cfg.socket.lstat().st_ino == sock_inode:
                    cfg.socket.unlink()
    return daemon.exit_code


def run_command(args: argparse.Namespace) -> int:
    """`wghybrid run`: the daemon in the foreground. 0 on a clean stop, 2 when it cannot
    start as configured (the reason is logged in one line), 1 on a fatal error."""
    level = getattr(args, "log_level", None)
    if level:
        from wghybrid._log import setup_logging

        setup_logging(level)
    try:
        cfg = config_from_args(args)
        return asyncio.run(serve(cfg))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
