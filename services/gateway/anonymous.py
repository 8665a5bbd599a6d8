"""Anonymous access and cross-origin callers: for dashboards and scripts that send no key.

Off by default. With ``CALIBER_GATEWAY_ANONYMOUS=true`` a request without a key acts as one
tenant (``CALIBER_GATEWAY_ANONYMOUS_TENANT``) with a chosen set of roles
(``CALIBER_GATEWAY_ANONYMOUS_ROLES``); a presented key is still checked, so a wrong key is
refused. Anyone who can reach the port then reads (and, with those roles, writes) that
tenant's data, so the gateway refuses to start in this mode when it listens beyond
loopback, unless ``CALIBER_GATEWAY_ANONYMOUS_FORCE=true``, and says so loudly in its log.

A browser page of another site could call a loopback gateway too (a ``<form>`` POST needs no
CORS, a WebSocket neither): an anonymous request that carries an ``Origin`` header is served
only when that origin is the gateway's own or one of ``CALIBER_GATEWAY_CORS_ORIGINS``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from services.gateway.auth import Principal
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


class AnonymousExposed(RuntimeError):
    """Anonymous access was asked for on a gateway that listens beyond loopback."""


def anonymous_principal(settings: GatewaySettings) -> Principal | None:
    """Who a request without a key is, or None when anonymous access is off."""
    if not settings.gateway_anonymous:
        return None
    return Principal(
        None, settings.gateway_anonymous_tenant, frozenset(settings.gateway_anonymous_roles)
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name the gateway binds) is reachable from this machine
    only. ``0.0.0.0`` and ``::`` are every interface, so not loopback."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: GatewaySettings) -> None:
    """Refuse anonymous access beyond loopback unless forced; log loudly when it is on.

    Raises :class:`AnonymousExposed` naming the settings involved.
    """
    if not settings.gateway_anonymous:
        return
    host = settings.gateway_host
    roles = ", ".join(settings.gateway_anonymous_roles)
    if not is_loopback(host):
        if not settings.gateway_anonymous_force:
            raise AnonymousExposed(
                f"CALIBER_GATEWAY_ANONYMOUS=true while CALIBER_GATEWAY_HOST={host} is not a "
                "loopback address: anyone who reaches the port would act as tenant "
                f"{settings.gateway_anonymous_tenant!r} with roles {roles}. Listen on "
                "127.0.0.1, turn anonymous access off, or set "
                "CALIBER_GATEWAY_ANONYMOUS_FORCE=true to accept that"
            )
        logger.warning(
            "ANONYMOUS ACCESS IS FORCED ON A NON-LOOPBACK ADDRESS (%s): anyone who reaches "
            "this port acts as tenant %r with roles %s",
            host,
            settings.gateway_anonymous_tenant,
            roles,
        )
    logger.warning(
        "ANONYMOUS ACCESS IS ON: requests without an API key act as tenant %r with roles %s "
        "(CALIBER_GATEWAY_ANONYMOUS); allowed browser origins: %s",
        settings.gateway_anonymous_tenant,
        roles,
        ", ".join(settings.gateway_cors_origins) or "none but the gateway's own",
    )


def origin_allowed(headers: Mapping[str, str], allowed: list[str]) -> bool:
    """Whether a request's ``Origin`` (if any) is the gateway's own or an allowed one.

    A request without ``Origin`` (a script, curl, a same-origin GET) is allowed: only
    browsers send it, and they always do on cross-origin requests and WebSockets.

    The gateway's own origin is one whose host is the request's ``Host`` and is a loopback
    name or an address: a name of another site could resolve to this gateway (DNS
    rebinding), and its page would then send an ``Origin`` equal to its ``Host``. A page
    served under such a name is listed in ``CALIBER_GATEWAY_CORS_ORIGINS``.
    """
    origin = headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = headers.get("host")
    if host is None or origin.split("://", 1)[-1] != host:
        return False
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:  # a malformed Host (an unclosed IPv6 bracket)
        return False
    return _is_address_or_loopback(name)


def _is_address_or_loopback(name: str) -> bool:
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def refusal_detail(origin: str | None) -> str:
    return (
        f"origin {origin!r} may not use anonymous access; add it to "
        "CALIBER_GATEWAY_CORS_ORIGINS or send an API key"
    )
