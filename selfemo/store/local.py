"""The `file://` backend: a directory tree on a local (or mounted) disk.

Every write goes to a hidden temporary file next to its target and is
`os.replace`d into place, so a reader never sees half a file; a commit is
published by renaming its staging directory (marker already inside) onto the
prefix, one atomic step.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .base import Store
from .errors import NotFoundError, StoreError
from .keys import MARKER, STAGING_INFIX, StoreURI, join
from .manifest import Manifest

_PART = re.compile(r"^\..+\.part-[0-9a-f]{32}$")
"""In-flight temporary files (`.{name}.part-{uuid}`): never listed."""


class FileStore(Store):
    def __init__(self, location: StoreURI) -> None:
        assert location.scheme == "file", location
        super().__init__(location)
        self.root = Path(location.path)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    @contextlib.contextmanager
    def _io(self, key: str, what: str, *, reading: bool = False) -> Iterator[None]:
        """Turn OS errors into store errors that name the object."""
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            if not reading:
                raise StoreError(self.uri_for(key), f"{what} failed: {exc}") from exc
            raise NotFoundError(self.uri_for(key), f"{what}: not found") from exc
        except OSError as exc:
            raise StoreError(self.uri_for(key), f"{what} failed: {exc}") from exc

    def _put_bytes(self, key: str, data: bytes) -> None:
        with self._io(key, "write"):
            _atomic_write(self._path(key), lambda f: f.write(data))

    def _put_file(self, key: str, path: Path) -> None:
        with self._io(key, "upload"), open(path, "rb") as src:
            _atomic_write(self._path(key), lambda f: shutil.copyfileobj(src, f))

    def _get_bytes(self, key: str) -> bytes:
        with self._io(key, "read", reading=True):
            return self._path(key).read_bytes()

    def _get_file(self, key: str, dest: Path) -> None:
        with self._io(key, "download", reading=True), open(self._path(key), "rb") as src:
            _atomic_write(dest, lambda f: shutil.copyfileobj(src, f))

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        keys = []
        for dirpath, _, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(base).as_posix()
            keys.extend(join(prefix, "" if rel_dir == "." else rel_dir, name)
                        for name in filenames if not _PART.match(name))
        return keys

    def _delete_tree(self, prefix: str) -> None:
        """A directory is first renamed aside, so it disappears in one step."""
        path = self._path(prefix)
        with self._io(prefix, "delete"):
            if path.is_dir() and not path.is_symlink():
                trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex}")
                os.rename(path, trash)
                shutil.rmtree(trash)
            else:
                path.unlink(missing_ok=True)

    def _publish(self, staging: str, prefix: str, manifest: Manifest) -> None:
        staged, final = self._path(staging), self._path(prefix)
        with self._io(prefix, "publish"):
            staged.mkdir(parents=True, exist_ok=True)  # an empty commit stages nothing
            _atomic_write(staged / MARKER, lambda f: f.write(manifest.to_json()))
            self._delete_tree(prefix)  # overwrite, or debris of a failed attempt
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, final)
            _fsync_dir(final.parent)

    def _staging_areas(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if not path.parent.is_dir():
            return []
        parent_key = prefix.rpartition("/")[0]
        return [join(parent_key, p.name) for p in path.parent.iterdir()
                if p.name.startswith(path.name + STAGING_INFIX) and p.is_dir()]


def _atomic_write(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temporary sibling, fsync, rename: all or nothing at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
