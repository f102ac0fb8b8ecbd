"""The HTTP API (aiohttp), versioned under /v1; `wghybrid/openapi.json` describes it.

Handlers never await the data plane: they read the daemon's last status snapshot and its
overrides, so the tick loop keeps its cadence however busy the API is. Every request is
validated before anything is touched; a bad one gets a 4xx with
`{"error": "<what is wrong>", "field": "<name>" | null}`. An unexpected exception becomes
a logged 500 with the same shape; it never reaches the event loop.

Access has two roles: read (every GET: status, peers, overrides, policy, health, metrics)
and admin (what changes things: setting and clearing overrides, reloading the policy). On
the unix socket, whoever the socket's mode (0660) lets connect may read; the admin role
goes by the client's credentials (SO_PEERCRED): root, the daemon's own user, or a member
of an admin group. Over TCP every request must carry `Authorization: Bearer <token>`, the
admin token or the read-only one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wghybrid.daemon.api.base import (
    BUSY,
    CACHE,
    CONFIG,
    DAEMON,
    MAX_BODY,
    MAX_STREAMS,
    STREAMS,
    Access,
    ApiConfig,
    DaemonView,
    Health,
    openapi_document,
)
from wghybrid.daemon.api.events import get_events, get_explain
from wghybrid.daemon.api.fragments import BodyCache
from wghybrid.daemon.api.middleware import _access_middleware, errors_middleware, limits_middleware
from wghybrid.daemon.api.routes import (
    delete_override,
    get_health,
    get_metrics,
    get_openapi,
    get_overrides,
    get_peers,
    get_policy,
    get_status,
    post_override,
    post_policy_reload,
)

__all__ = ["BUSY", "Access", "DaemonView", "Health", "build_app"]


def build_app(
    daemon: DaemonView, *, access: Access | None = None, token: str | None = None,
    max_streams: int = MAX_STREAMS,
) -> web.Application:
    """The API application; the caller adds the tick loop to its cleanup_ctx.

    `access` None (and no `token`): no access checks, for in-process test servers; the
    daemon always passes one. `token` alone is an admin token (the older signature)."""
    if access is None and token is not None:
        access = Access(admin_token=token)
    middlewares: list[Any] = [errors_middleware, limits_middleware]
    if access is not None:
        middlewares.append(_access_middleware(access))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[DAEMON] = daemon
    app[CONFIG] = ApiConfig(access, openapi_document(), max_streams)
    app[STREAMS] = set()
    app[CACHE] = BodyCache()
    app[BUSY] = set()
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/peers", get_peers)
    # A key has "/" in it, percent-encoded or not: the peer is the rest of the path.
    app.router.add_get("/v1/peers/{interface}/{peer:.+}/explain", get_explain)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/overrides", get_overrides)
    app.router.add_post("/v1/overrides", post_override)
    app.router.add_delete("/v1/overrides", delete_override)
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_post("/v1/policy/reload", post_policy_reload)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_metrics)
    return app
