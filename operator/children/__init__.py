"""Kubernetes manifests of a run's children, built by pure functions.

One module per kind (`generator`, `trainer`, `evaluator`, `configmap`),
shared pod pieces in `common`. Builders take the run, a
:class:`~selfemo.operator.round.ChildIntent` and :class:`BuilderSettings`
and return plain dicts: no API client, no I/O, so golden-file tests pin every
field and the kopf handlers only apply what they are given.
"""
from __future__ import annotations

from selfemo.spec import SelfEmoRun

from ..round import ChildIntent
from .common import BuilderSettings
from .configmap import build_config_map
from .evaluator import build_evaluator
from .generator import build_generator
from .trainer import build_trainer

__all__ = ["BuilderSettings", "build", "build_config_map", "build_evaluator", "build_generator", "build_trainer"]


def build(run: SelfEmoRun, intent: ChildIntent, settings: BuilderSettings) -> list[dict]:
    """Every object ``intent`` needs, in the order to create them (a
    multi-node trainer's headless Service comes before its Job)."""
    if intent.kind == "generator":
        return [build_generator(run, intent, settings)]
    if intent.kind == "trainer":
        return build_trainer(run, intent, settings)
    if intent.kind == "evaluator":
        return [build_evaluator(run, intent, settings)]
    raise ValueError(f"unknown child kind {intent.kind!r}")
