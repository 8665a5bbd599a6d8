"""Logging of the gateway: uvicorn's loggers with API keys taken out of every line.

The query form of a key (``/ws/live?api_key=...``) would otherwise land in uvicorn's
WebSocket and access lines; every gateway log handler replaces its value with ``***``.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

_KEY_IN_QUERY = re.compile(r"(api_key=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    return _KEY_IN_QUERY.sub(r"\1***", text)


class RedactKeys(logging.Filter):
    """Takes ``api_key=...`` values out of a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "api_key" in record.msg.lower():
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install_redaction() -> None:
    """Add :class:`RedactKeys` to every handler of the root logger (Caliber's own lines)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactKeys) for f in handler.filters):
            handler.addFilter(RedactKeys())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging config, with keys redacted on every handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_keys": {"()": RedactKeys}}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_keys")
    return config
