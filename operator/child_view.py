"""A run's Jobs and Deployments as the watch streams show them, corrected
by what this operator itself just did.

The kopf operator keeps every child (label `selfemo.dev/run`) in kopf
indexes fed by the watch streams it already has open, so a reconcile pass
reads its children from memory instead of listing them through the API
(two list calls per pass were most of the API load at 200 runs). A watch
lags a little behind the API, and that lag must never make a pass act on a
child that is gone:

- a child the operator deleted stays in the index until its DELETED event
  arrives; a pass in between would delete it again or, when the child is
  wanted again (a retry after its back-off, a resume), take the old attempt
  for the new one and not create it. Such uids are *hidden* until the index
  no longer holds them (a uid is never reused, so once gone it is gone for
  good);
- kopf relists after a broken watch (410 Gone) without a DELETED event for
  what disappeared meanwhile. An occasional real list (a resync) finds such
  leftovers: a uid indexed before the list but missing from it was deleted,
  and is hidden the same way.

Pure functions over plain dicts, so they are tested without kopf or a cluster.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

_META_KEYS = ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp")


@dataclass(frozen=True)
class Children:
    """The Jobs and Deployments of one run (API dicts), as one pass sees them."""

    jobs: tuple[dict, ...] = ()
    deployments: tuple[dict, ...] = ()

    def all(self) -> tuple[dict, ...]:
        return self.jobs + self.deployments


def slim(obj: dict) -> dict:
    """What :mod:`selfemo.operator.kube_observer` reads of a child (identity,
    labels, timestamps, status), so the index does not hold every child's
    whole pod template for the life of the operator."""
    meta = obj.get("metadata") or {}
    return copy.deepcopy({  # a copy: nothing kopf does to its own dicts reaches the index
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in _META_KEYS if k in meta},
        "status": obj.get("status") or {},
    })


def uid(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("uid") or ""


def uids(objs: Iterable[dict]) -> set[str]:
    return {u for u in map(uid, objs) if u}


def visible(children: Children, hidden: set[str]) -> Children:
    """``children`` without the hidden uids."""
    return Children(tuple(o for o in children.jobs if uid(o) not in hidden),
                    tuple(o for o in children.deployments if uid(o) not in hidden))


def still_hidden(hidden: set[str], indexed: Children) -> set[str]:
    """The hidden uids the index still holds; the others' DELETED has arrived."""
    return hidden & uids(indexed.all())


def vanished(indexed: Children, listed: Children) -> set[str]:
    """Uids indexed before a list was taken but missing from it: deleted
    without the watch saying so. Only valid when ``indexed`` was read before
    the list (anything in it existed then; uids never come back)."""
    return uids(indexed.all()) - uids(listed.all())
