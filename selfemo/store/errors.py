"""The store's exceptions.

Every message starts with the URI it is about, so a failed step's log line
says *where* without a traceback; none ever contains credentials (URIs are
redacted before they reach a message, and credentials never enter a URI).
"""
from __future__ import annotations


class StoreError(Exception):
    """Base class: anything the store could not do."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"{uri}: {problem}")
        self.uri = uri
        self.problem = problem


class InvalidKeyError(StoreError, ValueError):
    """A key or prefix that could escape its root (`..`, absolute) or is malformed."""


class InvalidURIError(StoreError, ValueError):
    """A store URI with an unsupported scheme, a missing bucket, or credentials in it."""


class NotFoundError(StoreError):
    """The object (or bucket) does not exist."""


class NotCommittedError(NotFoundError):
    """The prefix has no `_SUCCESS` marker: its output is not (yet) published."""


class StoreUnavailableError(StoreError):
    """The backend kept failing (unreachable, 5xx, throttled) after every retry."""


class AccessDeniedError(StoreError):
    """Credentials were found but are not allowed to do this (or none were found)."""


class IntegrityError(StoreError):
    """What was read does not match the size/sha256 recorded in the manifest."""
