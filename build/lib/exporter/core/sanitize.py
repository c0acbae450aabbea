"""Make error messages safe to store and show: no URL userinfo or query, no auth values, bounded."""

from __future__ import annotations

import re

MAX_ERROR_CHARS = 300

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]*@", re.IGNORECASE)
_URL_QUERY = re.compile(r"(?P<base>[a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s]*", re.IGNORECASE)
_AUTH_VALUE = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"\b(authorization\s*[:=]\s*)(\w+\s+)?[^\s,;]+", re.IGNORECASE)


def sanitize(message: str) -> str:
    """Make an error message safe to store and show: no URL userinfo or query, no auth values, bounded."""
    message = message[: MAX_ERROR_CHARS * 4]  # cut first: the patterns below are quadratic on a huge run
    message = _URL_CREDENTIALS.sub(r"\g<scheme>", message)
    message = _URL_QUERY.sub(r"\g<base>", message)
    message = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}[redacted]", message)
    message = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} [redacted]", message)
    message = " ".join(message.split())
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return message
