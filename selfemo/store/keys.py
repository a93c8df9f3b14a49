"""Pure logic about names: keys, prefixes, store URIs, endpoints.

Keys are `/`-separated paths relative to a store's root.  The same key must
mean the same object on a local disk and in a bucket, and must never reach
outside the root, so validation is strict and happens before any I/O.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import InvalidKeyError, InvalidURIError

MARKER = "_SUCCESS"
"""Name of the commit marker: its presence (and nothing else) makes a prefix visible."""

STAGING_INFIX = ".tmp-"
"""Staging areas are siblings `{prefix}.tmp-{token}` of the prefix they will publish."""

ENDPOINT_ENV = ("SELFEMO_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where a custom S3 endpoint (MinIO, SeaweedFS) comes from when not passed: first set wins."""


def check_key(key: str, *, where: str = "store") -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidKeyError."""
    problem = _key_problem(key)
    if problem:
        raise InvalidKeyError(where, f"invalid key {key!r}: {problem}")
    return key


def check_prefix(prefix: str, *, allow_root: bool = False, where: str = "store") -> str:
    """Like `check_key` for a "directory"; one trailing `/` is dropped, `""` is the root."""
    if isinstance(prefix, str) and prefix.endswith("/") and prefix != "/":
        prefix = prefix[:-1]
    if prefix == "" and allow_root:
        return prefix
    return check_key(prefix, where=where)


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"keys are str, not {type(key).__name__}"
    if not key:
        return "empty key"
    if key.startswith("/"):
        return "absolute keys are not allowed (keys are relative to the store root)"
    if "\\" in key or "\x00" in key:
        return "backslashes and NUL are not allowed"
    for part in key.split("/"):
        if part in ("", ".", ".."):
            return "empty, '.' and '..' path segments are not allowed"
    return None


def join(*parts: str) -> str:
    """Join key parts with `/`, skipping empty ones (the root)."""
    return "/".join(p for p in parts if p)


def relative(key: str, prefix: str) -> str:
    """`key` relative to `prefix` (which must contain it)."""
    if not prefix:
        return key
    assert key.startswith(prefix + "/"), (key, prefix)
    return key[len(prefix) + 1:]


def staging_prefix(prefix: str, token: str) -> str:
    """The private area a commit of `prefix` writes to before publishing.

    A *sibling*, not a child: on a local disk the whole staging directory is
    renamed onto `prefix` in one atomic step, which is impossible for a
    directory inside it; and a sibling never shows up in `list(prefix)` nor is
    removed by `delete(prefix)` while a commit is in flight.
    """
    return f"{prefix}{STAGING_INFIX}{token}"


@dataclass(frozen=True)
class StoreURI:
    """A parsed store location: a local directory or a bucket plus key prefix."""

    scheme: str  # "file" or "s3"
    bucket: str  # "" for file
    path: str  # file: absolute local path; s3: key prefix inside the bucket ("" = bucket root)

    @property
    def uri(self) -> str:
        if self.scheme == "file":
            return Path(self.path).as_uri()
        return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"

    def child(self, key: str) -> "StoreURI":
        """The location of `key` below this one."""
        key = check_prefix(key, allow_root=True, where=self.uri)
        if self.scheme == "file":
            return StoreURI("file", "", str(Path(self.path, key)) if key else self.path)
        return StoreURI("s3", self.bucket, join(self.path, key))

    def __str__(self) -> str:
        return self.uri


def parse_store_uri(uri: str | os.PathLike[str]) -> StoreURI:
    """Parse `file://…`, `s3://bucket/prefix` or a plain (relative or absolute) path."""
    text = os.fspath(uri)
    if not isinstance(text, str) or not text:
        raise InvalidURIError(repr(uri), "empty store URI")
    parts = urlsplit(text)
    if parts.scheme == "s3":
        return _parse_s3(text, parts)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidURIError(redact(text), "file URIs must be file:///absolute/path")
        return StoreURI("file", "", str(Path(unquote(parts.path)).resolve()))
    if "://" in text:
        raise InvalidURIError(redact(text), f"unsupported scheme {parts.scheme!r} (use file:// or s3://)")
    return StoreURI("file", "", str(Path(text).expanduser().resolve()))


def _parse_s3(text: str, parts) -> StoreURI:
    if "@" in parts.netloc:
        raise InvalidURIError(redact(text), "credentials in store URIs are not allowed; "
                              "use the AWS credential chain (env vars, profile, IRSA)")
    if not parts.netloc:
        raise InvalidURIError(text, "missing bucket (s3://bucket/prefix)")
    if parts.query or parts.fragment:
        raise InvalidURIError(text, "query strings and fragments are not supported")
    prefix = check_prefix(parts.path.lstrip("/"), allow_root=True, where=text)
    return StoreURI("s3", parts.netloc, prefix)


def redact(url: str) -> str:
    """`url` without any `user:password@` part, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def resolve_endpoint(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The S3 endpoint to use: the argument, else the first of ENDPOINT_ENV; None = AWS.

    An empty string counts as unset (the run spec's `storage.endpoint: ""`).
    """
    for candidate in (explicit, *(environ.get(name) for name in ENDPOINT_ENV)):
        if candidate:
            if urlsplit(candidate).scheme not in ("http", "https"):
                raise InvalidURIError(redact(candidate), "S3 endpoint must be an http(s) URL")
            return candidate.rstrip("/")
    return None
