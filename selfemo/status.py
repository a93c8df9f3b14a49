"""The `status` of a `SelfEmoRun`: written by the operator (or `selfemo run`),
read by users through `kubectl get selfemoruns`, the printer columns and the
metrics collector. Its schema goes into the CRD beside the spec's.
"""
from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(str, Enum):
    """Where a run is. Terminal phases never change again."""

    pending = "Pending"
    generating = "Generating"
    training = "Training"
    evaluating = "Evaluating"
    succeeded = "Succeeded"
    failed = "Failed"
    suspended = "Suspended"

    def is_terminal(self) -> bool:
        return self in (Phase.succeeded, Phase.failed)


class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_StatusModel):
    """A condition per the Kubernetes API conventions, keyed by `type`."""

    type: str = Field(description="Condition type, e.g. `Ready`, `Progressing`, `Failed`.")
    status: str = Field(description="`True`, `False` or `Unknown`.")
    reason: str = Field("", description="CamelCase reason a program can act on.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field("", description="RFC 3339 time of the last status change.")
    observed_generation: int = Field(0, description="The spec generation this condition was computed for.")


class RoundStatus(_StatusModel):
    """What one flywheel round did."""

    round: int = Field(description="Round number, from 1; round 0 holds the base model's baseline evaluation.")
    phase: str = Field("", description="Last phase this round reached.")
    started_at: str = Field("", description="RFC 3339 start time.")
    finished_at: str = Field("", description="RFC 3339 end time.")
    durations: dict[str, float] = Field(default_factory=dict, description="Seconds spent per phase.")
    samples_generated: int = Field(0, description="Candidates generated.")
    samples_kept: int = Field(0, description="Candidates kept by the flywheel filter.")
    mean_reward: float | None = Field(None, description="Mean total reward of the generated candidates.")
    eval: dict[str, float] = Field(default_factory=dict, description="Weighted-F1 (0–100) per evaluation dataset and `mean`.")
    expression_consistency: dict[str, float] = Field(
        default_factory=dict, description="Expression consistency (mean sIoU, 0–1) per evaluation dataset and `mean`."
    )
    checkpoint: str = Field("", description="Store URI of the round's checkpoint.")


class RunStatus(_StatusModel):
    """Observed state of a run, maintained by the operator."""

    phase: Phase = Field(Phase.pending, description="Current phase.")
    round: int = Field(0, description="Current round (0 before the first).")
    best_round: int = Field(0, description="Round with the best mean eval weighted-F1 so far (0: the base model).")
    best_weighted_f1: float | None = Field(None, description="Best mean eval weighted-F1 so far (0–100).")
    message: str = Field("", description="Human-readable summary of the current state.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    rounds: list[RoundStatus] = Field(default_factory=list, description="Per-round history.")
    retries: dict[str, int] = Field(
        default_factory=dict, description="Failures counted per child name; a child is recreated while this is at most maxRetries."
    )
    retry_after: dict[str, str] = Field(
        default_factory=dict, description="RFC 3339 time before which a failed child is not recreated (exponential back-off)."
    )
    phase_started_at: str = Field("", description="RFC 3339 time the current phase began (for per-phase durations).")
    observed_generation: int = Field(0, description="The spec generation last acted on.")
