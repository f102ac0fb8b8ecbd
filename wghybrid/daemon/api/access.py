"""Who may do what: roles, bearer tokens (TCP), peer credentials (unix socket)."""

from __future__ import annotations

import hmac
import pwd
import socket
import struct

from aiohttp import web

from wghybrid.daemon.api.base import CONFIG, Access, Role


def _offered_token(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip().encode("utf-8", "backslashreplace")  # any bytes a client sent


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    offered = _offered_token(header)
    return offered is not None and hmac.compare_digest(offered, expected.encode())


def token_role(access: Access, header: str | None) -> Role | None:
    """The role a TCP request's bearer token gives, or None (401). Both tokens are
    compared, in constant time, whichever matches."""
    offered = _offered_token(header)
    if offered is None:
        return None
    admin = access.admin_token is not None and hmac.compare_digest(
        offered, access.admin_token.encode()
    )
    read = access.read_token is not None and hmac.compare_digest(
        offered, access.read_token.encode()
    )
    return Role.ADMIN if admin else Role.READ if read else None


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux >= 4.13: the supplementary groups of the process that connected."""
_CRED = struct.Struct("3i")


def unix_role(request: web.BaseRequest, access: Access) -> Role:
    """Admin when the connecting process's uid, gid or a supplementary group is one of
    `access`'s; read otherwise (the socket's mode already decided who may connect)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return Role.READ
    try:
        _pid, uid, gid = _CRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
    except OSError:
        return Role.READ
    if uid in access.admin_uids or gid in access.admin_gids:
        return Role.ADMIN
    if access.admin_gids:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        except OSError:  # ERANGE: more than 256 groups; ENOPROTOOPT: an old kernel
            return Role.READ
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        if access.admin_gids.intersection(groups):
            return Role.ADMIN
    return Role.READ


def requester(request: web.Request) -> str:
    """Who sent a request, as the event log records it: "uid 1000 (alice)" on the unix
    socket (SO_PEERCRED), "admin token (192.0.2.7)" on TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            _pid, uid, _gid = _CRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
            )
        except OSError:
            return "unix socket"
        try:
            return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
        except KeyError:
            return f"uid {uid}"
    peer = request.remote or "?"
    config = request.app[CONFIG]
    access = config.access
    if access is not None and token_role(access, request.headers.get("Authorization")) \
            is Role.ADMIN:
        return f"admin token ({peer})"
    return f"TCP {peer}"


def is_unix_request(request: web.BaseRequest) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


# ---------------------------------------------------------------------------------------
# Middlewares: errors (outermost), limits, then access

