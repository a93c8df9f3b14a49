"""The `s3://` backend: AWS S3 or any S3-compatible server (MinIO, SeaweedFS).

Credentials come only from boto3's standard chain (env vars, profile, IRSA,
instance metadata).  A custom endpoint implies path-style addressing, which
is what self-hosted servers expect.  Each operation is retried as a whole on
top of botocore's per-request retries (see retry.py for why both); whatever
still fails becomes a StoreError naming the object and the endpoint.

S3 has no rename, so a commit is published by server-side copies from the
staging area followed by the marker; readers only trust prefixes with a
marker, so a publish that dies halfway leaves nothing visible.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                 HTTPClientError, IncompleteReadError, NoCredentialsError,
                                 PartialCredentialsError, ResponseStreamingError)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import Store
from .errors import AccessDeniedError, NotFoundError, StoreError, StoreUnavailableError
from .keys import MARKER, STAGING_INFIX, StoreURI, join, redact, relative, resolve_endpoint
from .manifest import Manifest
from .retry import RetriesExhausted, RetryPolicy, retry_call

log = logging.getLogger("selfemo.store")
T = TypeVar("T")
MiB = 1 << 20

UNREACHABLE, TRANSIENT = "unreachable", "transient"
_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeoutException",
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "PriorRequestNotComplete",
})
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED_CODES = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "ExpiredToken", "InvalidToken", "AllAccessDisabled"})
_DELETE_BATCH = 1000  # the S3 DeleteObjects limit


def classify(exc: BaseException) -> str | None:
    """UNREACHABLE, TRANSIENT (worth retrying) or None (definitive), from the cause chain.

    boto3 wraps some errors (S3UploadFailedError keeps only the message, with
    the ClientError as context), so those wrappers are looked through.
    """
    for err in _chain(exc):
        if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
            return UNREACHABLE
        if isinstance(err, (BotoConnectionError, HTTPClientError, ResponseStreamingError,
                            IncompleteReadError, RetriesExceededError, ConnectionError, TimeoutError)):
            return TRANSIENT
        if isinstance(err, ClientError):
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = err.response.get("Error", {}).get("Code", "")
            return TRANSIENT if status >= 500 or status == 429 or code in _TRANSIENT_CODES else None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what boto3's wrappers (and only those) were raised from."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = (err.__cause__ or err.__context__) if isinstance(err, Boto3Error) else None


def _client_error(exc: BaseException) -> ClientError | None:
    return next((e for e in _chain(exc) if isinstance(e, ClientError)), None)


class S3Store(Store):
    """A store rooted at `s3://bucket/prefix`."""

    def __init__(self, location: StoreURI, *, endpoint_url: str | None = None,
                 region_name: str | None = None, retries: int = 5, backoff: float = 0.2,
                 max_backoff: float = 5.0, request_attempts: int = 3,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 multipart_threshold: int = 64 * MiB, multipart_chunksize: int = 16 * MiB,
                 max_concurrency: int = 8) -> None:
        """`retries` whole-operation attempts (`backoff`…`max_backoff` seconds apart),
        each of up to `request_attempts` botocore tries per HTTP request.
        Files above `multipart_threshold` go up in parts (S3 needs parts ≥ 5 MiB;
        s3transfer raises smaller chunk sizes to that)."""
        assert location.scheme == "s3", location
        super().__init__(location)
        self.bucket = location.bucket
        self.policy = RetryPolicy(retries, backoff, max_backoff)
        endpoint = resolve_endpoint(endpoint_url, os.environ)
        extra = {}
        if endpoint:
            # Self-hosted servers want path-style URLs, and some reject the CRC
            # checksums boto3 adds by default; the manifest's sha256 covers integrity.
            extra = {"s3": {"addressing_style": "path"},
                     "request_checksum_calculation": "when_required",
                     "response_checksum_validation": "when_required"}
        config = Config(retries={"mode": "standard", "max_attempts": request_attempts},
                        connect_timeout=connect_timeout, read_timeout=read_timeout,
                        max_pool_connections=max(10, max_concurrency), **extra)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region_name, config=config)
        self.endpoint = redact(self.client.meta.endpoint_url)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=multipart_chunksize,
                                       max_concurrency=max_concurrency)

    def _obj(self, key: str) -> str:
        return join(self.location.path, key)

    def _call(self, key: str, what: str, fn: Callable[[], T]) -> T:
        """Run one whole operation with retries; translate what finally fails."""
        uri = self.uri_for(key)

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            log.warning("%s: %s via %s failed (%s); retry %d/%d in %.2fs", uri, what,
                        self.endpoint, type(exc).__name__, attempt, self.policy.attempts - 1, wait)

        try:
            return retry_call(fn, policy=self.policy, on_retry=on_retry,
                              retryable=lambda exc: classify(exc) is not None)
        except RetriesExhausted as exc:
            if classify(exc.last) == UNREACHABLE:
                problem = f"endpoint {self.endpoint} unreachable after {exc.attempts} attempts"
            else:
                problem = f"{what} failed after {exc.attempts} attempts at endpoint {self.endpoint}"
            raise StoreUnavailableError(uri, f"{problem} ({exc.last})") from exc.last
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._translate(uri, what, exc) from exc

    def _translate(self, uri: str, what: str, exc: Exception) -> StoreError:
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AccessDeniedError(uri, f"{what}: no usable AWS credentials found "
                                          "(env vars, profile, IRSA)")
        client_error = _client_error(exc)
        code = client_error.response.get("Error", {}).get("Code", "") if client_error else ""
        if code == "NoSuchBucket":
            return NotFoundError(uri, f"bucket {self.bucket!r} does not exist at {self.endpoint}")
        if code in _NOT_FOUND_CODES:
            return NotFoundError(uri, f"{what}: not found")
        if code in _DENIED_CODES:
            return AccessDeniedError(uri, f"{what} refused by {self.endpoint} ({code}); "
                                          "check the AWS credential chain (env vars, profile, IRSA)")
        return StoreError(uri, f"{what} failed at endpoint {self.endpoint}: {exc}")

    # -- primitives ------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._call(key, "upload", lambda: self.client.upload_fileobj(
            io.BytesIO(data), self.bucket, self._obj(key), Config=self.transfer))

    def _put_file(self, key: str, path: Path) -> None:
        self._call(key, "upload", lambda: self.client.upload_file(
            str(path), self.bucket, self._obj(key), Config=self.transfer))

    def _get_bytes(self, key: str) -> bytes:
        return self._call(key, "read", lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._obj(key))["Body"].read())

    def _get_file(self, key: str, dest: Path) -> None:
        # s3transfer downloads to a temporary name and renames at the end.
        self._call(key, "download", lambda: self.client.download_file(
            self.bucket, self._obj(key), str(dest), Config=self.transfer))

    def _exists(self, key: str) -> bool:
        try:
            self._call(key, "stat", lambda: self.client.head_object(
                Bucket=self.bucket, Key=self._obj(key)))
            return True
        except NotFoundError:
            return False

    def _copy(self, src: str, dst: str) -> None:
        """Server-side copy (multipart above the threshold: no bytes through us)."""
        self._call(dst, "copy", lambda: self.client.copy(
            {"Bucket": self.bucket, "Key": self._obj(src)}, self.bucket, self._obj(dst),
            Config=self.transfer))

    def _scan(self, key: str, s3_prefix: str) -> list[str]:
        """Store keys of all objects whose S3 key starts with `s3_prefix` (`key` names it in errors)."""
        paginator = self.client.get_paginator("list_objects_v2")

        def scan() -> list[str]:
            return [obj["Key"] for page in paginator.paginate(Bucket=self.bucket, Prefix=s3_prefix)
                    for obj in page.get("Contents", ())]

        root = self.location.path
        return [relative(k, root) for k in self._call(key, "list", scan)
                if not k.endswith("/")]  # "directory" placeholders some tools create

    def _list(self, prefix: str) -> list[str]:
        full = self._obj(prefix)
        return self._scan(prefix, full + "/" if full else "")

    def _delete_tree(self, prefix: str) -> None:
        keys = [k for k in self._scan(prefix, self._obj(prefix)) if k == prefix or k.startswith(prefix + "/")]
        markers = [k for k in keys if k.rsplit("/", 1)[-1] == MARKER]
        others = [k for k in keys if k.rsplit("/", 1)[-1] != MARKER]
        for batch in (markers, others):  # markers strictly first: the output vanishes at once
            for i in range(0, len(batch), _DELETE_BATCH):
                self._delete_objects(batch[i:i + _DELETE_BATCH])

    def _delete_objects(self, keys: list[str]) -> None:
        response = self._call(keys[0], "delete", lambda: self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": self._obj(k)} for k in keys], "Quiet": True}))
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(self.uri_for(relative(first["Key"], self.location.path)),
                             f"delete failed at {self.endpoint}: {first.get('Code')} "
                             f"{first.get('Message')} ({len(errors)} objects not deleted)")

    def _publish(self, staging: str, prefix: str, manifest: Manifest) -> None:
        self._delete_tree(prefix)  # an old output (overwrite) or debris of a failed attempt
        for name in manifest.names:
            self._copy(join(staging, name), join(prefix, name))
        self._put_bytes(join(prefix, MARKER), manifest.to_json())

    def _staging_areas(self, prefix: str) -> list[str]:
        start = prefix + STAGING_INFIX
        return sorted({start + k[len(start):].split("/", 1)[0]
                       for k in self._scan(prefix, self._obj(start))})
