"""Middlewares: errors (outermost), limits, then access."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from wghybrid.daemon.api.access import is_unix_request, token_role, unix_role
from wghybrid.daemon.api.base import (
    BUSY,
    DAEMON,
    MAX_BODY,
    SAFE_METHODS,
    Access,
    ApiError,
    ClientGone,
    Handler,
    Role,
    clients_log,
    error_response,
    log,
)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    busy = request.app[BUSY]
    busy.add(request.protocol)
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.field)
        if exc.status in (408, 413):
            response.force_close()  # the rest of the body is not worth waiting for
        return response
    except (ClientGone, ConnectionError) as exc:
        clients_log.info(
            "client hung up during %s %s: %s", request.method, request.rel_url.path, exc or "EOF"
        )
        response = error_response(400, "the client hung up")
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = error_response(exc.status, message or exc.reason, None, headers)
        if exc.status == 413:
            response.force_close()
        return response
    except Exception:
        request.app[DAEMON].metrics.internal_errors.inc()
        request.app[DAEMON].serial += 1
        log.exception("internal error answering %s %s", request.method, request.rel_url)
        return error_response(500, "internal error (logged by the daemon)")
    finally:
        busy.discard(request.protocol)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body announced larger than MAX_BODY is refused from its Content-Length, before a
    byte of it is read (client_max_size alone would wait for the body to arrive)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError(413, f"the body ({length} bytes) is larger than {MAX_BODY} bytes")
    return await handler(request)


def _access_middleware(
    access: Access,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_unix_request(request):
            if request.method in SAFE_METHODS:
                return await handler(request)  # anyone who may connect may read
            role = unix_role(request, access)
        else:
            found = token_role(access, request.headers.get("Authorization"))
            if found is None:
                raise ApiError(401, "a bearer token is required (Authorization: Bearer <token>)")
            role = found
        if (
            role is not Role.ADMIN
            and request.method not in SAFE_METHODS
            and request.match_info.http_exception is None  # 404 and 405 stay what they are
        ):
            raise ApiError(
                403,
                "this credential is read-only: setting or clearing overrides and reloading "
                "the policy need the admin role (docs/api.md, Access)",
            )
        return await handler(request)

    return check

