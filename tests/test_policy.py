"""Which weights a round loads: the committed checkpoint itself, never a cached
copy of another run's checkpoint that happens to share the run's name."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfemo.policy import COMPLETE, open_run_store, policy_path, run_layout
from tests.support.runs import quickstart_run


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SELFEMO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _commit_checkpoint(run, round_: int, weights: bytes) -> None:
    with open_run_store(run).commit(run_layout(run).checkpoint(round_)) as out:
        out.put_bytes("model.safetensors", weights)
        out.put_bytes("config.json", b"{}")


def test_same_run_name_in_two_stores_gets_each_its_own_checkpoint(tmp_path, erc_dir):
    a = quickstart_run(tmp_path / "a", erc_dir)
    b = quickstart_run(tmp_path / "b", erc_dir)
    assert (a.metadata.namespace, a.metadata.name) == (b.metadata.namespace, b.metadata.name)
    _commit_checkpoint(a, 1, b"weights of run a")
    _commit_checkpoint(b, 1, b"weights of run b")

    path_a, path_b = policy_path(a, 2), policy_path(b, 2)

    assert path_a != path_b
    assert (Path(path_a) / "model.safetensors").read_bytes() == b"weights of run a"
    assert (Path(path_b) / "model.safetensors").read_bytes() == b"weights of run b"


def test_a_recommitted_checkpoint_is_downloaded_again(tmp_path, erc_dir):
    run = quickstart_run(tmp_path, erc_dir)
    _commit_checkpoint(run, 1, b"first")
    first = policy_path(run, 2)
    open_run_store(run).delete(run_layout(run).checkpoint(1))  # the run was deleted and re-created
    _commit_checkpoint(run, 1, b"second")

    second = policy_path(run, 2)

    assert (Path(second) / "model.safetensors").read_bytes() == b"second"
    assert (Path(first) / "model.safetensors").read_bytes() == b"first"  # the old copy is not rewritten


def test_downloaded_once_and_complete(tmp_path, erc_dir, cache):
    run = quickstart_run(tmp_path, erc_dir)
    _commit_checkpoint(run, 1, b"w")
    path = Path(policy_path(run, 2))
    (path / "model.safetensors").write_bytes(b"local edit")  # a second call must not fetch again
    assert policy_path(run, 2) == str(path)
    assert (path / "model.safetensors").read_bytes() == b"local edit"
    assert (path / COMPLETE).exists()
    assert not list((cache / "checkpoints").glob(".download-*"))  # no staging left behind


def test_round_one_starts_from_the_base_model(tmp_path, erc_dir):
    run = quickstart_run(tmp_path, erc_dir, model=str(tmp_path))
    assert policy_path(run, 1) == str(tmp_path)
