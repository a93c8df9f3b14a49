"""The backend-independent half of the store: validation, directories, commits.

A backend (local.py, s3.py) implements a handful of primitives on already
validated keys (`_put_bytes`, `_get_file`, `_list`, `_delete_tree`,
`_publish`…).  Everything a step relies on for correctness — key checks, the
staging/publish/marker protocol, skipping committed prefixes, verifying what
committed readers return — lives here once, so both backends behave alike.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import os
import uuid
from pathlib import Path
from typing import Iterator

from .errors import IntegrityError, InvalidKeyError, NotCommittedError, NotFoundError, StoreError
from .keys import MARKER, StoreURI, check_key, check_prefix, join, relative, staging_prefix
from .manifest import FileEntry, Manifest, entry_for_bytes, entry_for_file, new_manifest

log = logging.getLogger("selfemo.store")


class Store(abc.ABC):
    """One artefact store rooted at `location`; all keys are relative to it."""

    def __init__(self, location: StoreURI) -> None:
        self.location = location

    @property
    def uri(self) -> str:
        return self.location.uri

    def uri_for(self, key: str) -> str:
        return self.location.child(key).uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- plain objects -------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_bytes(self._key(key), bytes(data))

    def get_bytes(self, key: str) -> bytes:
        return self._get_bytes(self._key(key))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._put_file(self._key(key), _local_file(path))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        """Download to `path` (parents created; replaced atomically); returns it."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._get_file(self._key(key), dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._exists(self._key(key))

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of all objects below `prefix` ("directory" semantics, recursive)."""
        return sorted(self._list(self._prefix(prefix, allow_root=True)))

    def delete(self, prefix: str) -> None:
        """Delete the object `prefix` and everything below it; markers go first,
        so a committed output turns invisible before any of its files vanish."""
        self._delete_tree(self._prefix(prefix))

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> list[str]:
        """Upload every file below `local_dir` to `prefix/relative/path`; returns the keys."""
        prefix = self._prefix(prefix, allow_root=True)
        keys = []
        for rel, path in _walk_files(Path(local_dir), self.uri):
            keys.append(join(prefix, rel))
            self._put_file(keys[-1], path)
        return keys

    def download_dir(self, prefix: str, local_dir: str | os.PathLike[str]) -> list[Path]:
        """Download every object below `prefix` into `local_dir`; returns the paths."""
        prefix = self._prefix(prefix, allow_root=True)
        return [self.get_file(key, Path(local_dir, self._key(relative(key, prefix))))
                for key in self.list(prefix)]

    # -- commits ---------------------------------------------------------

    @contextlib.contextmanager
    def commit(self, prefix: str, *, overwrite: bool = False) -> Iterator["CommitWriter"]:
        """Write an output that becomes visible all at once, or not at all.

        Writes go to a staging area; on a clean exit the backend publishes it
        under `prefix` and the `_SUCCESS` manifest is written last.  An
        exception in the block (or while publishing) publishes nothing and
        removes the staging area.  A prefix that is already committed is left
        alone (the block's writes are dropped, `writer.skipped` is True and
        `writer.manifest` is the existing one) unless `overwrite=True`.
        One writer per prefix at a time: a commit owns its prefix, and any
        unmarked objects under it are debris of a failed attempt.
        """
        prefix = self._prefix(prefix)
        existing = None if overwrite else self._manifest_or_none(prefix)
        if existing is not None:
            log.info("%s: already committed, skipping", self.uri_for(prefix))
            writer = CommitWriter(self, prefix, staging="", existing=existing)
            with writer.open():
                yield writer
            return
        writer = CommitWriter(self, prefix, staging=staging_prefix(prefix, uuid.uuid4().hex))
        try:
            with writer.open():
                yield writer
            manifest = new_manifest(prefix, writer.entries)
            self._publish(writer.staging, prefix, manifest)
        except BaseException:
            self._discard(writer.staging)
            raise
        writer.manifest = manifest
        self._discard(writer.staging)
        log.info("%s: committed %d files, %d bytes", self.uri_for(prefix),
                 len(manifest.files), manifest.total_bytes)

    def is_committed(self, prefix: str) -> bool:
        return self._exists(join(self._prefix(prefix), MARKER))

    def read_manifest(self, prefix: str) -> Manifest:
        manifest = self._manifest_or_none(self._prefix(prefix))
        if manifest is None:
            raise NotCommittedError(self.uri_for(prefix), f"no {MARKER} marker: not committed")
        return manifest

    def open_committed(self, prefix: str) -> "CommittedOutput":
        """A reader that sees exactly the committed files (raises NotCommittedError)."""
        prefix = self._prefix(prefix)
        return CommittedOutput(self, prefix, self.read_manifest(prefix))

    def list_committed(self, prefix: str) -> list[str]:
        """Sorted keys of the committed files of `prefix` (raises NotCommittedError)."""
        output = self.open_committed(prefix)
        return [output.key(name) for name in output.names]

    def staging_areas(self, prefix: str) -> list[str]:
        """Leftover staging prefixes of `prefix` (from crashed or in-flight commits)."""
        return sorted(self._staging_areas(self._prefix(prefix)))

    def clean_staging(self, prefix: str) -> list[str]:
        """Delete leftover staging areas of `prefix`; only safe when no commit of
        it is running (e.g. at the start of the single step that owns it)."""
        areas = self.staging_areas(prefix)
        for area in areas:
            self._delete_tree(area)
        return areas

    # -- helpers ---------------------------------------------------------

    def _key(self, key: str) -> str:
        return check_key(key, where=self.uri)

    def _prefix(self, prefix: str, *, allow_root: bool = False) -> str:
        return check_prefix(prefix, allow_root=allow_root, where=self.uri)

    def _manifest_or_none(self, prefix: str) -> Manifest | None:
        marker = join(prefix, MARKER)
        try:
            data = self._get_bytes(marker)
        except NotFoundError:
            return None
        try:
            return Manifest.from_json(data)
        except ValueError as exc:
            raise StoreError(self.uri_for(marker), f"corrupt commit marker ({exc})") from exc

    def _discard(self, staging: str) -> None:
        """Best effort: a staging area that cannot be removed is invisible anyway."""
        if not staging:
            return
        try:
            self._delete_tree(staging)
        except Exception as exc:  # never mask the error that brought us here
            log.warning("%s: could not remove staging area (%s); clean_staging() removes it later",
                        self.uri_for(staging), getattr(exc, "problem", exc))

    # -- backend primitives (keys are validated) -------------------------

    @abc.abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _put_file(self, key: str, path: Path) -> None: ...

    @abc.abstractmethod
    def _get_bytes(self, key: str) -> bytes:
        """Raise NotFoundError if missing."""

    @abc.abstractmethod
    def _get_file(self, key: str, dest: Path) -> None:
        """Raise NotFoundError if missing; `dest` must never be left half-written."""

    @abc.abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """All keys below `prefix/` ("" = everything), any order."""

    @abc.abstractmethod
    def _delete_tree(self, prefix: str) -> None:
        """Delete `prefix` and everything below it, markers first; missing is fine."""

    @abc.abstractmethod
    def _publish(self, staging: str, prefix: str, manifest: Manifest) -> None:
        """Make the staged files the content of `prefix`, marker last; replaces
        whatever was there.  On failure `prefix` must not carry a marker."""

    @abc.abstractmethod
    def _staging_areas(self, prefix: str) -> list[str]: ...


class CommitWriter:
    """What `Store.commit` yields: writes into the staging area, records sizes and hashes."""

    def __init__(self, store: Store, prefix: str, *, staging: str,
                 existing: Manifest | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.staging = staging
        self.skipped = existing is not None
        self.manifest: Manifest | None = existing
        self.entries: dict[str, FileEntry] = {}
        self._open = False

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        """Writes are accepted only while the commit's with-block runs."""
        self._open = True
        try:
            yield
        finally:
            self._open = False

    def put_bytes(self, name: str, data: bytes) -> None:
        data = bytes(data)
        if self._accept(name):
            self.store._put_bytes(join(self.staging, name), data)
            self.entries[name] = entry_for_bytes(data)

    def put_file(self, name: str, path: str | os.PathLike[str]) -> None:
        path = _local_file(path)
        if self._accept(name):
            entry = entry_for_file(path)
            self.store._put_file(join(self.staging, name), path)
            self.entries[name] = entry

    def upload_dir(self, local_dir: str | os.PathLike[str], sub: str = "") -> list[str]:
        """Upload a local tree to `sub/` of the output; returns the names."""
        names = []
        for rel, path in _walk_files(Path(local_dir), self.store.uri):
            names.append(join(sub, rel))
            self.put_file(names[-1], path)
        return names

    def _accept(self, name: str) -> bool:
        where = self.store.uri_for(self.prefix)
        check_key(name, where=where)
        if name.split("/")[-1] == MARKER:
            raise InvalidKeyError(where, f"{MARKER} is reserved for the commit marker")
        if not self._open:
            raise StoreError(where, "commit already finished; write inside the with-block")
        return not self.skipped


class CommittedOutput:
    """Read access to the files of one committed prefix, checked against its manifest."""

    def __init__(self, store: Store, prefix: str, manifest: Manifest) -> None:
        self.store = store
        self.prefix = prefix
        self.manifest = manifest

    @property
    def names(self) -> list[str]:
        return self.manifest.names

    def key(self, name: str) -> str:
        if name not in self.manifest.files:
            raise NotFoundError(self.store.uri_for(join(self.prefix, name)),
                                "not part of the committed output")
        return join(self.prefix, name)

    def get_bytes(self, name: str) -> bytes:
        key = self.key(name)
        data = self.store.get_bytes(key)
        self._verify(key, entry_for_bytes(data), self.manifest.files[name])
        return data

    def get_file(self, name: str, path: str | os.PathLike[str]) -> Path:
        key = self.key(name)
        dest = self.store.get_file(key, path)
        try:
            self._verify(key, entry_for_file(dest), self.manifest.files[name])
        except IntegrityError:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def download(self, local_dir: str | os.PathLike[str]) -> list[Path]:
        """Download the committed files (not the marker) into `local_dir`."""
        return [self.get_file(name, Path(local_dir, name)) for name in self.names]

    def _verify(self, key: str, got: FileEntry, want: FileEntry) -> None:
        if got != want:
            raise IntegrityError(self.store.uri_for(key),
                                 f"content changed since commit: {got.size} bytes sha256 "
                                 f"{got.sha256[:12]}…, manifest says {want.size} bytes "
                                 f"sha256 {want.sha256[:12]}…")


def _local_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a file")
    return path


def _walk_files(root: Path, where: str) -> list[tuple[str, Path]]:
    """(relative key, path) of every file below `root`, sorted; keys validated."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    found = []
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.is_file():
                found.append((check_key(path.relative_to(root).as_posix(), where=where), path))
    return sorted(found)
