"""One redaction routine for everything that prints, logs or shows an error or a URL.

    redact("HTTP 401: bad key Bearer sk-abc123…")   -> "HTTP 401: bad key Bearer ***"
    public_url("https://me:pw@host:8443/v1?key=x")  -> "https://host:8443/v1"

`redact` removes API keys (`sk-…`, `Bearer …`, `api_key=…`-style fields), the `user:password@` part of URLs,
and every value registered with `register_secret` (the keys this process actually sends, whatever they look
like). Backend errors, backend labels, pipeline failures and manifests, and the log records of any handler
`install_log_filter` was called for all pass through it, so a server that echoes the `Authorization` header
back in an error body shows nobody the key.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
#: Registered values shorter than this are not masked (masking "a" would mangle every message).
MIN_SECRET_LENGTH = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # user:password@ (or token@) in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@"), rf"\1{MASK}@"),
    # Authorization header values, however quoted: Authorization: Bearer …, "authorization": "Basic …"
    (
        re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+"),
        lambda m: f"{m[1]}{m[2] + ' ' if m[2] else ''}{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer)(\s+|%20)[A-Za-z0-9._~+/=\-]{8,}"), rf"\1\2{MASK}"),
    # named key fields in headers, JSON, .env lines: api_key=…, "x-api-key": "…", password: …
    (
        re.compile(
            r"(?i)\b((?:x-)?api[-_]?key|access[-_]?token|auth[-_]?token|client[-_]?secret|password|passwd)"
            r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]{4,}"
        ),
        rf"\1\2{MASK}",
    ),
    # key=… / token=… in query strings
    (re.compile(r"(?i)([?&;](?:key|token|secret|sig|signature)=)[^&\s#\"']+"), rf"\1{MASK}"),
    # OpenAI-style keys wherever they stand: sk-…, sk-proj-…
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), MASK),
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Mask `secret` (e.g. the API key a client sends) wherever `redact` runs from now on."""
    if secret and len(secret.strip()) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(secret.strip())


def redact(text: str) -> str:
    """`text` with registered secrets, API keys, Authorization values and URL passwords replaced by ***."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def public_url(url: str) -> str:
    """`url` without user:password, query and fragment (where keys hide): for labels, messages and manifests."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 address
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:  # not a URL at all (a bad port, …): show it redacted rather than fail
        return redact(url)
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


class RedactingFilter(logging.Filter):
    """Passes every record through `redact` (message and arguments rendered first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


LOG_FILTER = RedactingFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Redact the records of every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
