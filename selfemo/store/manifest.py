"""The commit manifest: the JSON body of a `_SUCCESS` marker.

It lists exactly the files a commit published, with size and sha256, so a
reader knows what belongs to the output (debris of a failed attempt does not)
and can detect a file that changed under it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

FORMAT = "selfemo.store/manifest-v1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What one commit published under `prefix` (names are relative to it)."""

    prefix: str
    created: str  # ISO-8601, UTC
    files: Mapping[str, FileEntry] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "prefix": self.prefix,
            "created": self.created,
            "total_bytes": self.total_bytes,
            "files": {name: {"size": e.size, "sha256": e.sha256} for name, e in self.files.items()},
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """Parse a marker; raises ValueError if it is not one of ours."""
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown manifest format {body.get('format')!r}")
            files = {name: FileEntry(int(e["size"]), str(e["sha256"]))
                     for name, e in body["files"].items()}
            return cls(str(body["prefix"]), str(body["created"]), files)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed manifest: {exc}") from exc


def new_manifest(prefix: str, files: Mapping[str, FileEntry],
                 now: datetime | None = None) -> Manifest:
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return Manifest(prefix, created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    dict(sorted(files.items())))


def entry_for_bytes(data: bytes) -> FileEntry:
    return FileEntry(len(data), hashlib.sha256(data).hexdigest())


def entry_for_file(path: Path) -> FileEntry:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(size, digest.hexdigest())
