"""Redaction: the one function every string leaving the process passes through (pure).

Errors, log lines, stderr, run files (``metadata.json``, ``requests.jsonl``, ``intervals.jsonl``), reprs and the
memo's endpoint field are built from text that may hold a credential: the API key (sent by us, or echoed back by
a server in an error body, a mid-stream error chunk or a non-JSON line) and ``user:password@`` in a URL.

    redact(text, secrets)        every occurrence of each secret -> "***", plus any URL userinfo and Bearer token
    redact_obj(obj, secrets)     the same over every string of a JSON-like object (keys included)
    excerpt(text, secrets, n)    redact FIRST, then cut to n characters: cutting first could leave a key's prefix
    url_without_credentials(url) the URL with ``user:password@`` removed
    check_api_key(key)           refuse a key a header cannot carry (CR/LF, spaces, control characters), unprinted
"""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# scheme://user[:password]@host -> scheme://***@host (any scheme: a proxy URL in an error message too)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@")
# "Bearer <token>" in an echoed header: masked even when the token is not one we know (another client's key)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",}]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret, URL userinfo and Bearer token replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


def redact_obj(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of a JSON-like object (dicts, lists, tuples, scalars) with every string redacted."""
    secrets = tuple(s for s in secrets if s)
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {redact(k, secrets) if isinstance(k, str) else k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, secrets) for v in obj]
    return obj


def excerpt(text: str, secrets: Iterable[str | None], limit: int) -> str:
    """The first ``limit`` characters of the redacted text (mask before cutting, so no key prefix survives)."""
    return redact(text, secrets)[:limit]


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """(user, password) from ``scheme://user:password@host``; (None, None) without userinfo."""
    parts = urlsplit(url)
    return parts.username, parts.password


def url_without_credentials(url: str) -> str:
    """The URL with any ``user:password@`` removed (host, port, path, query kept)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def check_api_key(key: str | None, where: str = "API key") -> None:
    """Raise ValueError (never showing the key) when it cannot be sent as a header value as it is."""
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: expected a non-empty string")
    if any(c in "\r\n" for c in key):
        raise ValueError(f"{where}: the key contains a line break (CR/LF, often a Windows line ending or a copied "
                         "newline); remove it and try again (the key is not shown)")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"{where}: the key contains whitespace or a control character; remove it and try again "
                         "(the key is not shown)")
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: the key contains characters an HTTP header cannot carry (non-Latin-1); "
                         "the key is not shown") from None
