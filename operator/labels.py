"""Names the operator stamps on everything it creates, in one place.

Children carry the recommended `app.kubernetes.io/*` labels plus
`selfemo.dev/run` and `selfemo.dev/round`, so `kubectl get -l` and the
metrics can select a run's pods; kopf's progress storage and finalizer use
the `selfemo.dev` prefix so they never collide with another operator's.
"""
from __future__ import annotations

from selfemo.spec import API_GROUP

APP_NAME = "selfemo"
LABEL_RUN = f"{API_GROUP}/run"
LABEL_ROUND = f"{API_GROUP}/round"
LABEL_SHARD = f"{API_GROUP}/shard"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_COMPONENT = "app.kubernetes.io/component"
FINALIZER = f"{API_GROUP}/finalizer"
PROGRESS_PREFIX = API_GROUP


def child_labels(run: str, round_: int, component: str) -> dict[str, str]:
    """Labels of a child of ``run`` in ``round_`` (component: generator, trainer, evaluator)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": run,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "selfemo-operator",
        LABEL_RUN: run,
        LABEL_ROUND: str(round_),
    }
