"""The store's behaviour, the same on every backend: local disk, moto, real SeaweedFS.

The SeaweedFS variant of each test is marked `integration` (it talks to the
session's `weed mini`); `-m "not integration"` keeps the fast file and moto runs.
"""
from __future__ import annotations

import json
import uuid

import pytest

from selfemo.store import (IntegrityError, InvalidKeyError, MARKER, NotCommittedError, NotFoundError,
                           StoreError, open_store)


@pytest.fixture(params=["file", "moto", pytest.param("seaweedfs", marks=pytest.mark.integration)])
def store(request, tmp_path):
    """A fresh, empty store (S3 stores get their own prefix in the shared bucket)."""
    root = f"tests/{uuid.uuid4().hex[:12]}"
    if request.param == "file":
        return open_store(tmp_path / "store")
    if request.param == "moto":
        return open_store(f"s3://{request.getfixturevalue('moto_s3')}/{root}")
    server = request.getfixturevalue("seaweedfs_s3")
    return open_store(f"s3://{server.bucket}/{root}", endpoint_url=server.endpoint,
                      retries=3, backoff=0.05)


# -- plain objects --------------------------------------------------------------

def test_bytes_round_trip_and_overwrite(store):
    store.put_bytes("a/b.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b.bin") == b"\x00\x01payload"
    store.put_bytes("a/b.bin", b"new")
    assert store.get_bytes("a/b.bin") == b"new"
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_missing_object_names_its_uri(store, tmp_path):
    with pytest.raises(NotFoundError) as info:
        store.get_bytes("nope/x")
    assert str(info.value).startswith(store.uri_for("nope/x"))
    assert not store.exists("nope/x")
    with pytest.raises(NotFoundError):
        store.get_file("nope/x", tmp_path / "dl" / "never-written")
    assert list(tmp_path.glob("dl/*")) == []  # no partial download left behind


def test_exists_is_about_objects(store):
    store.put_bytes("dir/file", b"x")
    assert store.exists("dir/file")
    assert not store.exists("dir")  # "directories" are not objects


def test_files_round_trip(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"file content" * 1000)
    store.put_file("k/f.bin", src)
    dest = store.get_file("k/f.bin", tmp_path / "deep" / "er" / "f.bin")
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.put_file("k/g", tmp_path / "missing")


def test_list_is_sorted_recursive_and_directory_scoped(store):
    for key in ["b/2", "a/x/1", "a/0", "ab/9", "a/x/0", "top"]:
        store.put_bytes(key, key.encode())
    assert store.list("a") == ["a/0", "a/x/0", "a/x/1"]  # not "ab/9"
    assert store.list("a/") == store.list("a")
    assert store.list("") == ["a/0", "a/x/0", "a/x/1", "ab/9", "b/2", "top"]
    assert store.list("missing") == []


def test_delete_removes_a_tree_or_an_object_and_nothing_else(store):
    for key in ["a/1", "a/x/2", "ab/3", "a.txt"]:
        store.put_bytes(key, b"x")
    store.delete("a")
    assert store.list("") == ["a.txt", "ab/3"]
    store.delete("a.txt")
    store.delete("never/existed")
    assert store.list("") == ["ab/3"]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_bad_keys_are_rejected_before_any_io(store, key):
    for call in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key),
                 lambda: store.exists(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKeyError, match="invalid key") as info:
            call()
        assert store.uri in str(info.value)


def test_dirs_round_trip(store, tmp_path):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"w" * 5000)
    (src / "sub" / "tokenizer.json").write_text("{}")
    assert store.upload_dir(src, "run/ckpt") == ["run/ckpt/model.safetensors", "run/ckpt/sub/tokenizer.json"]
    paths = store.download_dir("run/ckpt", tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in paths) == \
        ["model.safetensors", "sub/tokenizer.json"]
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == b"w" * 5000


def test_uri_for_opens_the_same_objects(store):
    store.put_bytes("ns/run/x.json", b"{}")
    uri = store.uri_for("ns/run")
    assert uri.startswith(store.uri) and uri.endswith("/ns/run")
    if uri.startswith("s3://"):
        sub = open_store(uri, endpoint_url=getattr(store, "endpoint", None))
    else:
        sub = open_store(uri)
    assert sub.get_bytes("x.json") == b"{}"


# -- commits ----------------------------------------------------------------------

def test_commit_publishes_files_with_a_manifest(store, tmp_path):
    (tmp_path / "local.bin").write_bytes(b"L" * 3000)
    assert not store.is_committed("out")
    with store.commit("out") as out:
        out.put_bytes("a.jsonl", b'{"x": 1}\n')
        out.put_file("nested/local.bin", tmp_path / "local.bin")
        assert not store.is_committed("out") and store.list("out") == []  # nothing visible yet
    assert not out.skipped
    assert store.is_committed("out")
    assert store.list("out") == ["out/_SUCCESS", "out/a.jsonl", "out/nested/local.bin"]
    assert store.list_committed("out") == ["out/a.jsonl", "out/nested/local.bin"]
    manifest = store.read_manifest("out")
    assert manifest == out.manifest
    assert manifest.files["nested/local.bin"].size == 3000
    marker = json.loads(store.get_bytes(f"out/{MARKER}"))
    assert set(marker) >= {"files", "created", "prefix"} and marker["prefix"] == "out"
    assert len(marker["files"]["a.jsonl"]["sha256"]) == 64
    committed = store.open_committed("out")
    assert committed.get_bytes("a.jsonl") == b'{"x": 1}\n'
    paths = committed.download(tmp_path / "dl")
    assert sorted(p.name for p in paths) == ["a.jsonl", "local.bin"]
    assert not (tmp_path / "dl" / MARKER).exists()
    assert store.staging_areas("out") == []


def test_exception_in_block_publishes_nothing(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.commit("round-001/selected") as out:
            out.put_bytes("part-0", b"data")
            raise RuntimeError("boom")
    assert not store.is_committed("round-001/selected")
    assert store.list("") == []  # neither output, nor marker, nor staging
    with pytest.raises(NotCommittedError, match="not committed"):
        store.open_committed("round-001/selected")
    with pytest.raises(NotCommittedError):
        store.list_committed("round-001/selected")


def test_recommit_is_a_no_op_returning_the_existing_manifest(store):
    with store.commit("step") as first:
        first.put_bytes("result", b"first")
    with store.commit("step") as second:
        assert second.skipped and second.manifest == first.manifest
        second.put_bytes("result", b"second")  # dropped: the step already ran
        second.put_bytes("extra", b"dropped")
    assert second.manifest == first.manifest
    assert store.list("step") == ["step/_SUCCESS", "step/result"]
    assert store.open_committed("step").get_bytes("result") == b"first"


def test_overwrite_replaces_the_whole_output(store):
    with store.commit("step") as out:
        out.put_bytes("old-only", b"1")
        out.put_bytes("both", b"1")
    with store.commit("step", overwrite=True) as out:
        out.put_bytes("both", b"2")
    assert store.list("step") == ["step/_SUCCESS", "step/both"]
    assert store.open_committed("step").get_bytes("both") == b"2"


def test_debris_of_a_failed_attempt_is_replaced(store):
    store.put_bytes("step/stale-from-crash", b"junk")  # no marker: not an output
    with store.commit("step") as out:
        out.put_bytes("fresh", b"ok")
    assert store.list("step") == ["step/_SUCCESS", "step/fresh"]


def test_empty_commit_and_upload_dir_in_commit(store, tmp_path):
    with store.commit("empty"):
        pass
    assert store.is_committed("empty") and store.list_committed("empty") == []
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "f").write_bytes(b"f")
    with store.commit("ckpt") as out:
        assert out.upload_dir(tmp_path / "d", "model") == ["model/s/f"]
    assert store.list_committed("ckpt") == ["ckpt/model/s/f"]


def test_writer_rules(store):
    with pytest.raises(InvalidKeyError, match="reserved"):
        with store.commit("p") as out:
            out.put_bytes(f"sub/{MARKER}", b"x")
    with pytest.raises(InvalidKeyError):
        with store.commit("p") as out:
            out.put_bytes("../p2/x", b"x")
    with store.commit("p") as out:
        out.put_bytes("x", b"x")
    with store.commit("p") as skipped:
        pass
    with pytest.raises(ValueError):
        with store.commit("q") as failed:
            raise ValueError
    for writer in (out, skipped, failed):  # a finished writer cannot leave debris behind
        with pytest.raises(StoreError, match="already finished"):
            writer.put_bytes("late", b"x")
    assert store.list("") == ["p/_SUCCESS", "p/x"]


def test_committed_reads_detect_changed_files(store, tmp_path):
    with store.commit("p") as out:
        out.put_bytes("f", b"original")
    store.put_bytes("p/f", b"tampered")  # behind the manifest's back
    committed = store.open_committed("p")
    with pytest.raises(IntegrityError, match="changed since commit"):
        committed.get_bytes("f")
    with pytest.raises(IntegrityError):
        committed.get_file("f", tmp_path / "f")
    assert not (tmp_path / "f").exists()
    with pytest.raises(NotFoundError, match="not part of the committed output"):
        committed.get_bytes("other")


def test_delete_uncommits_and_corrupt_marker_is_loud(store):
    with store.commit("p") as out:
        out.put_bytes("f", b"x")
    store.delete("p")
    assert not store.is_committed("p") and store.list("") == []
    store.put_bytes(f"q/{MARKER}", b"")  # e.g. a foreign tool's empty marker
    with pytest.raises(StoreError, match="corrupt commit marker"):
        store.read_manifest("q")


def test_leftover_staging_is_invisible_and_cleanable(store):
    store.put_bytes("out.tmp-0123abcd/f", b"from a crashed commit")
    with store.commit("out") as out:
        out.put_bytes("f", b"ok")
    assert store.list("out") == ["out/_SUCCESS", "out/f"]
    assert store.staging_areas("out") == ["out.tmp-0123abcd"]
    assert store.clean_staging("out") == ["out.tmp-0123abcd"]
    assert store.list("") == ["out/_SUCCESS", "out/f"]


def test_run_layout_paths_work_as_keys(store):
    from selfemo.store import RunLayout

    layout = RunLayout("s3://unused", "ns", "run")
    with store.commit(layout.trajectories(1)) as out:
        out.put_bytes(layout.shard_key(1, 0, 2).rsplit("/", 1)[1], b"{}")
    assert store.list_committed(layout.trajectories(1)) == [layout.shard_key(1, 0, 2)]


def test_file_publish_is_one_rename_and_a_failed_one_publishes_nothing(tmp_path, monkeypatch):
    import os

    store = open_store(tmp_path / "store")
    renames = []
    real_rename = os.rename

    def rename_failing_once(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        if len(renames) == 1:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_failing_once)
    with pytest.raises(StoreError, match="publish failed.*No space left") as info:
        with store.commit("out") as out:
            out.put_bytes("f", b"x")
    assert str(info.value).startswith(store.uri_for("out"))
    assert renames[0][0].startswith("out.tmp-") and renames[0][1] == "out"
    assert store.list("") == [] and not store.is_committed("out")
