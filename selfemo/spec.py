"""The `SelfEmoRun` resource: one set of pydantic models, the single source of
truth for the run file users write, the CRD schema the cluster enforces
(:mod:`selfemo.crd`) and the defaults every component reads.

Field names are the API (camelCase in YAML, snake_case in Python). Every field
has a description (it becomes the CRD's documentation and `kubectl explain`)
and a default, except ``model.base``. Cross-field rules live in validators on
the smallest model that sees all the fields involved, and their messages name
the field so `selfemo validate` can point at it.
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "selfemo.dev"
API_VERSION = "v1alpha1"
KIND = "SelfEmoRun"
PLURAL = "selfemoruns"

# Child names are `{run}-r{round}-gen-{shard}` and `{run}-r{round}-train`; the
# headless Service for torchrun rendezvous must be a DNS-1035 label (<= 63
# characters), so the run name leaves room for the longest suffix we add
# ("-r999-train" / "-r999-gen-999" = 13 characters) and for Job pod suffixes.
MAX_RUN_NAME = 40
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected
    (a typo such as `groupsize` must not silently fall back to a default)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
        validate_default=True,
    )


# --------------------------------------------------------------------------- model


class Dtype(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class ModelSpec(SpecModel):
    base: str = Field(
        min_length=1,
        description="The starting policy π₀: a built-in model name (`smollm2-135m-instruct`), a Hugging Face "
        "model id (`Qwen/Qwen3-8B`), a local path or a store URI (`s3://…`, `file://…`) of a Hugging Face checkpoint.",
    )
    dtype: Dtype = Field(Dtype.bfloat16, description="Weights dtype for generation and training (`auto` keeps the checkpoint's).")
    revision: str = Field("", description="Hugging Face revision (branch, tag or commit) of `base`; empty for the default branch.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the checkpoint. Off by default: it runs code from the model repository.")

    @field_validator("base")
    @classmethod
    def _no_credentials_in_base(cls, v: str) -> str:
        if "://" in v and "@" in urlsplit(v).netloc:
            raise ValueError("must not embed credentials (user:password@); use storage.credentialsSecret")
        return v


# --------------------------------------------------------------------------- datasets


class DataFormat(str, Enum):
    meld = "meld"
    emorynlp = "emorynlp"
    emorynlp_json = "emorynlp-json"
    iemocap = "iemocap"
    iemocap_pickle = "iemocap-pickle"
    jsonl = "jsonl"


class DatasetRef(SpecModel):
    name: str = Field(min_length=1, max_length=63, description="Short unique name of the dataset in this run; used in metrics labels and reports.")
    format: DataFormat = Field(description="File format of the corpus (see docs/data-formats.md).")
    uri: str = Field(min_length=1, description="Where the corpus lives: a local path, `file://` or `s3://` URI of its folder or file.")
    split: Literal["train", "dev", "test"] | None = Field(
        None, description="Which split to read; default `train` for training datasets and `test` for evaluation datasets."
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Label vocabulary for `jsonl` corpora without a header line; the built-in formats have a fixed one and refuse it.",
    )
    max_dialogues: int = Field(0, ge=0, description="Read at most this many dialogues (a fixed, seeded subset); 0 reads all.")
    max_utterances: int = Field(0, ge=0, description="Use at most this many utterances (evaluation slices); 0 uses all.")
    skip_bad_rows: bool = Field(False, description="Count and skip malformed rows instead of failing on the first one.")

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, v: str) -> str:
        if not DNS1123_LABEL.match(v):
            raise ValueError("must be lower-case letters, digits and '-', starting and ending with a letter or digit")
        return v

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, v: str) -> str:
        _check_uri(v, allowed=("", "file", "s3"))
        return v

    @model_validator(mode="after")
    def _labels_only_for_jsonl(self) -> "DatasetRef":
        if self.labels and self.format != DataFormat.jsonl.value:
            raise ValueError(f"labels: only `jsonl` corpora take a label list; {self.format} has a fixed vocabulary (remove `labels`)")
        return self


class Datasets(SpecModel):
    train: list[DatasetRef] = Field(
        default_factory=lambda: [DatasetRef(name="meld", format=DataFormat.meld, uri="../shared/erc/meld")],
        min_length=1,
        description="Corpora whose training dialogues seed self-play.",
    )
    eval: list[DatasetRef] = Field(
        default_factory=lambda: [DatasetRef(name="meld", format=DataFormat.meld, uri="../shared/erc/meld")],
        min_length=1,
        description="Corpora whose test splits every round is evaluated on.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> "Datasets":
        for field in ("train", "eval"):
            names = [d.name for d in getattr(self, field)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{field}: dataset names must be unique, repeated: {', '.join(dupes)}")
        return self


# --------------------------------------------------------------------------- self-play


class Task(str, Enum):
    recognition = "recognition"
    understanding = "understanding"
    expression = "expression"


class Intent(str, Enum):
    gold = "gold"
    predicted = "predicted"


class Source(str, Enum):
    model = "model"
    gold = "gold"


class Sampling(str, Enum):
    uniform = "uniform"
    label_balanced = "label-balanced"


class Answers(str, Enum):
    free = "free"
    labels = "labels"


class LabelSampling(str, Enum):
    policy = "policy"
    calibrated = "calibrated"


class SelfPlaySpec(SpecModel):
    tasks: list[Task] = Field(
        default_factory=lambda: [Task.recognition, Task.understanding, Task.expression],
        min_length=1,
        description="Which SELF-EMO tasks generate data: `recognition` (the ERC task), `understanding` (forecast the "
        "next speaker's emotion) and `expression` (answer with an intended emotion, then recognise it).",
    )
    group_size: int = Field(8, ge=1, le=64, description="G: candidate outputs sampled per prompt; GRPO normalises rewards within the group.")
    temperature: float = Field(1.0, gt=0, le=2.0, description="Sampling temperature for candidates.")
    top_p: float = Field(1.0, gt=0, le=1.0, description="Nucleus sampling mass for candidates.")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="Longest completion sampled per candidate (label answers are short; replies longer).")
    max_turns: int = Field(4, ge=0, le=32, description="Self-play turns the responder and recogniser alternate past a real context; 0 disables self-play dialogues.")
    context_turns: int = Field(
        8, ge=1, le=128,
        description="Dialogue turns of context shown in a prompt: at least this many of the most recent ones, up to "
        "half as many again, so that neighbouring utterances share a prompt prefix the engines compute once.",
    )
    prompts_per_round: int = Field(20000, ge=1, description="Training prompts sampled per round across all shards.")
    intent: Intent = Field(
        Intent.gold,
        description="Where the responder's intended emotion comes from: the gold label of the next turn (`gold`) or the "
        "model's own understanding prediction (`predicted`, needs the `understanding` task).",
    )
    seed: int = Field(0, ge=0, description="Seed for prompt sampling and decoding; rounds and shards derive theirs from it.")
    source: Source = Field(
        Source.model,
        description="Where a round's answers come from: `model` samples G candidates per prompt from the policy and the "
        "flywheel scores them (SELF-EMO); `gold` calls no model and gives each sampled recognition prompt the dataset's "
        "gold label as its one kept candidate: the ordinary supervised fine-tuning baseline. `gold` needs "
        "tasks [recognition] and training.algorithm `sft`.",
    )

    sampling: Sampling = Field(
        Sampling.uniform,
        description="How a round's prompts are drawn from the training positions: `uniform` (every position equally "
        "likely, so frequent labels such as `neutral` dominate) or `label-balanced` (round-robin over each dataset's "
        "gold labels of the target turn, rare labels first come first served; for SFT on gold answers this keeps the "
        "model from learning only the label prior).",
    )

    answers: Answers = Field(
        Answers.free,
        description="How the recogniser answers in self-play (recognition and understanding groups, and hearing its own "
        "replies): `free` samples up to maxNewTokens of free text and parses it into labels; `labels` draws each of the G "
        "candidates from the model's distribution over the dataset's label names (the log-likelihood of each name after "
        "the prompt, as the constrained evaluation scores them, softened by `temperature`) and hears a reply as its most "
        "likely label. With `labels` every candidate is a label, so the reward's spread is about which label rather than "
        "the answer format; replies (expression) stay free text. One label per candidate.",
    )
    label_sampling: LabelSampling = Field(
        LabelSampling.policy,
        description="With answers `labels`, the distribution the G candidates are drawn from: `policy` the softmax of "
        "the label scores; `calibrated` the same after each label's mean probability over the call's prompts of that "
        "dataset is divided out (batch calibration, as `batch_calibrated` in eval/metrics.json). A small model gives "
        "one label most of the probability for every prompt, so policy sampling rarely draws the others and most groups "
        "have no reward spread; calibrated sampling draws each label where the model leans to it more than usual.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "SelfPlaySpec":
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks: each task may appear once")
        if self.source == Source.gold and list(self.tasks) != [Task.recognition]:
            raise ValueError("source: `gold` has gold answers for the recognition task only; set tasks: [recognition]")
        if self.intent == Intent.predicted and Task.understanding not in self.tasks:
            raise ValueError("intent: `predicted` needs the `understanding` task in tasks")
        if self.label_sampling == LabelSampling.calibrated and self.answers != Answers.labels:
            raise ValueError("labelSampling: `calibrated` draws label answers; set answers: labels")
        return self


# --------------------------------------------------------------------------- rewards and flywheel


class RewardWeightsSpec(SpecModel):
    alignment: float = Field(1.0, ge=0, description="Weight of the multi-label alignment reward sIoU(pred, gold).")
    consistency: float = Field(0.5, ge=0, description="Weight of the group-consistency signal sIoU(pred_i, group vote).")
    format: float = Field(0.2, ge=0, description="Weight of the format reward (1 when the answer parses into vocabulary labels).")

    @model_validator(mode="after")
    def _some_weight(self) -> "RewardWeightsSpec":
        if self.alignment + self.consistency + self.format <= 0:
            raise ValueError("alignment: at least one reward weight must be positive")
        return self

    @property
    def total(self) -> float:
        return self.alignment + self.consistency + self.format


class RewardsSpec(SpecModel):
    smoothing: float = Field(0.1, gt=0, le=10, description="α of the smoothed IoU; > 0 so empty-vs-empty scores 1 and near misses stay graded.")
    weights: RewardWeightsSpec = Field(default_factory=RewardWeightsSpec, description="Weights of the total reward.")


class EarlyStopSpec(SpecModel):
    patience: int = Field(2, ge=0, description="Stop after this many rounds without improvement of mean eval weighted-F1; 0 disables early stopping.")
    min_delta: float = Field(0.2, ge=0, description="Smallest gain in mean weighted-F1 (points, 0–100) that counts as improvement.")


class FlywheelSpec(SpecModel):
    rounds: int = Field(5, ge=0, le=999, description="R: flywheel rounds (generate → select → train → evaluate); "
                        "0 evaluates the base model only (round 0), a zero-shot baseline run with the same command.")
    reward_threshold: float = Field(0.6, ge=0, description="τ: keep candidates whose total reward is at least this.")
    keep_per_prompt: int = Field(2, ge=1, description="k: keep at most this many candidates per prompt.")
    early_stop: EarlyStopSpec = Field(default_factory=EarlyStopSpec, description="Early stopping on mean eval weighted-F1.")
    gold_warmup: int = Field(
        0, ge=0, le=10_000_000,
        description="Round 1 fine-tunes on this many seeded gold recognition answers (what `selfPlay.source: gold` "
        "with `training.algorithm: sft` runs) and the self-play rounds start from its checkpoint in round 2: the "
        "paper's SFT warm-up on labelled data before the flywheel. Counted in `rounds`. 0: every round is a "
        "flywheel round. Not `training.sftWarmup`, which fine-tunes each round on the flywheel's own kept samples.",
    )


# --------------------------------------------------------------------------- training


class Algorithm(str, Enum):
    self_grpo = "self-grpo"
    sft = "sft"


class KlReference(str, Enum):
    base = "base"
    previous = "previous"


class DeepSpeedSpec(SpecModel):
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage (0 disables partitioning).")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO ≥ 1).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO-3 only).")

    @model_validator(mode="after")
    def _offload(self) -> "DeepSpeedSpec":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offloadParams: parameter offload needs zeroStage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offloadOptimizer: optimizer offload needs zeroStage 1, 2 or 3")
        return self


class LoraSpec(SpecModel):
    enabled: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights; merged into the saved checkpoint.")
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, description="Module names to adapt."
    )


class TrainingSpec(SpecModel):
    algorithm: Algorithm = Field(Algorithm.self_grpo, description="`self-grpo` (the method) or `sft` (supervised on the kept samples only: "
                                     "the flywheel's, or the gold answers when selfPlay.source is `gold`).")
    sft_warmup: bool = Field(True, description="Run SFT on the round's selected samples before SELF-GRPO.")
    learning_rate: float = Field(1.0e-6, gt=0, le=1.0, description="AdamW peak learning rate.")
    grpo_learning_rate: float | None = Field(
        None, gt=0, le=1.0,
        description="Peak learning rate of the SELF-GRPO steps; the SFT steps before them (`sftWarmup`, a gold "
                    "warm-up) keep `learningRate`. RL after SFT is usually run about ten times slower than the SFT, so "
                    "one run can fine-tune at 2e-5 and reinforce at 2e-6. Unset: `learningRate` for both.")
    clip: float = Field(0.2, gt=0, le=1.0, description="PPO clip range ε of the token-level ratio.")
    dual_clip: float | None = Field(
        None, gt=1.0,
        description="Dual-clip PPO bound c (verl's `clip_ratio_c`, 3 there): a token with a negative advantage A loses at "
                    "most c·|A|, so one whose ratio to π_{r-1} grew far past 1 (the SFT warm-up raised an answer its group "
                    "got wrong) stops dominating the step's gradient. Unset: plain PPO clip, unbounded on that side.")
    kl: float = Field(0.04, ge=0, description="Weight of the KL penalty to the reference model.")
    kl_reference: KlReference = Field(KlReference.base, description="Reference model of the KL term: π₀ (`base`) or the previous round's policy (`previous`).")
    min_group_std: float = Field(0.05, ge=0, description="Skip groups whose reward standard deviation is below this (no signal).")
    epochs: int = Field(1, ge=1, le=100, description="Passes over the round's groups.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per forward/backward pass per rank.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_seq_len: int = Field(1024, ge=16, le=131072, description="Longest prompt+completion in tokens; longer prompts are truncated from the left.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps with linear learning-rate warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    checkpoint_every: int = Field(200, ge=0, description="Save training state every N optimizer steps so a killed Job resumes; 0 only at the end.")
    seed: int = Field(0, ge=0, description="Seed for data order and initialisation of adapters.")
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed settings for multi-rank training.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="Optional LoRA adapters.")

    @model_validator(mode="after")
    def _grpo_rate_needs_grpo(self) -> "TrainingSpec":
        if self.grpo_learning_rate is not None and self.algorithm != Algorithm.self_grpo:
            raise ValueError(f"grpoLearningRate is the rate of SELF-GRPO steps, and algorithm {Algorithm(self.algorithm).value} "
                             "runs none; remove it or use learningRate")
        return self


# --------------------------------------------------------------------------- evaluation and engine


class Decoding(str, Enum):
    greedy = "greedy"
    constrained = "constrained"


class EvaluationSpec(SpecModel):
    decoding: Decoding = Field(
        Decoding.constrained,
        description="`greedy` parses the model's free answer; `constrained` scores each label's log-likelihood and picks the best.",
    )
    batch_size: int = Field(32, ge=1, description="Prompts per evaluation batch.")
    expression_samples: int = Field(200, ge=0, description="Test contexts used for the expression-consistency score; 0 skips it.")
    seed: int = Field(0, ge=0, description="Seed of the evaluation's samples (`maxUtterances`/`maxDialogues` slices, expression contexts); "
                      "separate from `selfPlay.seed` so runs with different training seeds are measured on the same utterances.")
    reuse_baseline: bool = Field(
        True,
        description="Round 0 (the base model) reuses an earlier run's baseline evaluation from `{storage.uri}/baselines/` "
        "when model, evaluation datasets, settings and prompt code are identical, and shares its own there.",
    )


class Backend(str, Enum):
    auto = "auto"
    vllm = "vllm"
    transformers = "transformers"


class EngineSpec(SpecModel):
    backend: Backend = Field(Backend.auto, description="Generation engine: `vllm`, `transformers`, or `auto` (vLLM when importable).")
    max_model_len: int = Field(4096, ge=64, description="Longest sequence the engine must hold (prompt + completion).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM: fraction of GPU memory for weights and KV cache.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs one engine spans; must not exceed resources.generator.gpus.")
    cpu_kv_cache_gib: int = Field(4, ge=1, description="vllm-cpu: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    enforce_eager: bool = Field(False, description="vLLM: skip torch.compile and CUDA graphs (faster start, slower steady state; for tests and short jobs).")
    batch_size: int = Field(64, ge=1, description="transformers: prompts per generate() call.")


# --------------------------------------------------------------------------- resources and scheduling


class Toleration(SpecModel):
    """A Kubernetes toleration (core/v1 Toleration), passed through to pods."""

    key: str = Field("", description="Taint key; empty with operator Exists tolerates everything.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="`Equal` or `Exists`.")
    value: str = Field("", description="Taint value for `Equal`.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field("", description="Taint effect; empty matches all.")
    toleration_seconds: int | None = Field(None, description="For NoExecute: how long the pod stays bound after the taint appears.")


Quantity = Annotated[
    str,
    Field(pattern=r"^([0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)?$", description="A Kubernetes quantity (e.g. `4`, `500m`, `16Gi`); empty leaves it unset."),
]


class PodResources(SpecModel):
    cpu: Quantity = Field("", description="CPU request (and limit) per pod; empty leaves it unset.")
    memory: Quantity = Field("", description="Memory request and limit per pod; empty leaves it unset.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must run on.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for tainted (e.g. GPU) nodes.")


class GeneratorResources(PodResources):
    shards: int = Field(1, ge=1, le=999, description="Generator Deployments per round, each owning one deterministic shard of the prompts.")
    gpus: int = Field(1, ge=0, le=64, description="GPUs per generator pod (nvidia.com/gpu); 0 runs on the CPU.")


class TrainerResources(PodResources):
    nodes: int = Field(1, ge=1, le=512, description="Nodes of the training Job (Indexed Job, torchrun rendezvous over a headless Service).")
    gpus_per_node: int = Field(8, ge=0, le=64, description="GPUs per training pod; 0 trains on the CPU.")


class EvaluatorResources(PodResources):
    gpus: int = Field(1, ge=0, le=64, description="GPUs of the evaluation pod.")


class Resources(SpecModel):
    generator: GeneratorResources = Field(default_factory=GeneratorResources, description="Generator Deployments.")
    trainer: TrainerResources = Field(default_factory=TrainerResources, description="The training Job.")
    evaluator: EvaluatorResources = Field(default_factory=EvaluatorResources, description="The evaluation Job.")

    @model_validator(mode="after")
    def _multi_node(self) -> "Resources":
        if self.trainer.nodes > 1 and self.trainer.gpus_per_node == 0:
            raise ValueError("trainer.gpusPerNode: multi-node training (nodes > 1) needs GPUs on every node")
        return self


class SchedulingSpec(SpecModel):
    queue_name: str = Field("", description="Kueue LocalQueue for gang admission (`kueue.x-k8s.io/queue-name` label); empty disables.")
    scheduler_name: str = Field("", description="Pod schedulerName (e.g. a gang scheduler such as Volcano); empty uses the default.")
    priority_class_name: str = Field("", description="PriorityClass of every child pod; empty uses the cluster default.")


class ImagesSpec(SpecModel):
    generator: str = Field("", description="Generator image; empty uses the operator's configured default.")
    trainer: str = Field("", description="Trainer image; empty uses the operator's configured default.")
    evaluator: str = Field("", description="Evaluator image; empty uses the generator image.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="imagePullPolicy of every child.")
    pull_secrets: list[str] = Field(default_factory=list, description="Names of imagePullSecrets in the run's namespace.")


# --------------------------------------------------------------------------- storage


class StorageSpec(SpecModel):
    uri: str = Field(
        "selfemo-runs",
        min_length=1,
        description="Artefact store root: `s3://bucket/prefix` on a cluster; on one machine a directory (a path, "
        "relative to the current directory, or `file:///absolute/path`). "
        "Runs live under `{uri}/{namespace}/{run}/`.",
    )
    endpoint: str = Field("", description="S3 endpoint URL for S3-compatible stores (MinIO, SeaweedFS); empty uses AWS.")
    region: str = Field("", description="S3 region; empty uses the SDK default chain.")
    credentials_secret: str = Field(
        "",
        description="Name of a Secret in the run's namespace with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, mounted as "
        "environment into children; empty uses the pod's own identity (IRSA, workload identity). Never put keys in the spec.",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        parts = _check_uri(v, allowed=("", "file", "s3"))
        if parts.scheme == "s3" and not parts.netloc:
            raise ValueError("an s3:// URI needs a bucket: s3://bucket/prefix")
        if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
            raise ValueError("file URIs must be file:///absolute/path; write a relative directory as a plain path")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v:
            parts = _check_uri(v, allowed=("http", "https"))
            if not parts.netloc:
                raise ValueError("must be an http(s) URL with a host, e.g. http://seaweedfs:8333")
        return v

    @field_validator("credentials_secret")
    @classmethod
    def _secret_name(cls, v: str) -> str:
        if v and not DNS1123_LABEL.match(v.replace(".", "-")):
            raise ValueError("must be the name of a Secret (lower-case letters, digits, '-', '.')")
        return v


# --------------------------------------------------------------------------- the spec


class SelfEmoRunSpec(SpecModel):
    """What a SELF-EMO run does and where: the `spec` of a `SelfEmoRun`."""

    model: ModelSpec = Field(description="The starting policy and its dtype.")
    datasets: Datasets = Field(default_factory=Datasets, description="Training and evaluation corpora.")
    self_play: SelfPlaySpec = Field(default_factory=SelfPlaySpec, description="Self-play tasks and sampling.")
    rewards: RewardsSpec = Field(default_factory=RewardsSpec, description="Smoothed-IoU rewards and their weights.")
    flywheel: FlywheelSpec = Field(default_factory=FlywheelSpec, description="Rounds, selection threshold and early stopping.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="SELF-GRPO / SFT settings.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="How each round is evaluated.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="The generation engine (vLLM or transformers).")
    resources: Resources = Field(default_factory=Resources, description="Pods per component and their placement.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Gang scheduling and priority pass-through.")
    images: ImagesSpec = Field(default_factory=ImagesSpec, description="Container images of the children.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Where trajectories, checkpoints and metrics go.")
    max_retries: int = Field(3, ge=0, le=100, description="Retries per child (with backoff) before the run fails.")
    suspend: bool = Field(False, description="Pause the run: generators scale to zero and no new child starts; resume by setting false.")

    @model_validator(mode="after")
    def _cross_field(self) -> "SelfEmoRunSpec":
        g = self.self_play.group_size
        if self.self_play.source == Source.gold and self.training.algorithm != Algorithm.sft:
            raise ValueError(
                f"selfPlay.source: `gold` gives each prompt one answer and no reward spread, which only supervised "
                f"training uses; set training.algorithm: sft (got {self.training.algorithm})"
            )
        if self.flywheel.gold_warmup:
            if self.self_play.source == Source.gold:
                raise ValueError("flywheel.goldWarmup: every round already fine-tunes on gold answers "
                                 "(selfPlay.source: gold); set goldWarmup: 0")
            if self.flywheel.rounds < 2:
                raise ValueError(f"flywheel.goldWarmup: round 1 is the gold warm-up, so rounds must be at least 2 "
                                 f"for a flywheel round to follow it (got rounds: {self.flywheel.rounds})")
        if self.flywheel.keep_per_prompt > g:
            raise ValueError(f"flywheel.keepPerPrompt: {self.flywheel.keep_per_prompt} exceeds selfPlay.groupSize {g}")
        if self.training.algorithm == Algorithm.self_grpo and g < 2:
            raise ValueError("selfPlay.groupSize: SELF-GRPO needs at least 2 candidates per prompt to normalise advantages")
        best = self.rewards.weights.total
        if self.flywheel.reward_threshold > best:
            raise ValueError(
                f"flywheel.rewardThreshold: {self.flywheel.reward_threshold} exceeds the highest total reward {best:g} "
                "(sum of rewards.weights); nothing would ever be kept"
            )
        gen = self.resources.generator
        if gen.gpus and self.engine.tensor_parallel_size > gen.gpus:
            raise ValueError(
                f"engine.tensorParallelSize: {self.engine.tensor_parallel_size} exceeds resources.generator.gpus {gen.gpus}"
            )
        if self.storage.endpoint and not self.storage.uri.startswith("s3://"):
            raise ValueError("storage.endpoint: an S3 endpoint only applies to an s3:// storage.uri")
        return self


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata a run file may carry."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="Run name; prefixes every child's name.")
    namespace: str = Field("default", description="Namespace of the run and its children.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > MAX_RUN_NAME:
            raise ValueError(f"must be at most {MAX_RUN_NAME} characters (children append up to 13), got {len(v)}")
        if not DNS1035_LABEL.match(v):
            raise ValueError("must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if len(v) > 63 or not DNS1123_LABEL.match(v):
            raise ValueError("must be a DNS-1123 label of at most 63 characters")
        return v


class SelfEmoRun(BaseModel):
    """A whole run manifest: what `kubectl apply -f` and `selfemo run` read."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["selfemo.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SelfEmoRun"]
    metadata: ObjectMeta
    spec: SelfEmoRunSpec
    status: dict[str, Any] | None = Field(None, description="Written by the operator; ignored on input.")

    @model_validator(mode="after")
    def _warmup_view_is_valid(self) -> "SelfEmoRun":
        """Build round 1's view now, so a warm-up the children could not run
        fails at `selfemo validate` / `kubectl apply` instead of at round 1."""
        if self.spec.flywheel.gold_warmup:
            try:
                round_spec(self, 1)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                why = first["msg"].removeprefix("Value error, ")
                raise ValueError(f"spec.flywheel.goldWarmup: round 1 (the gold warm-up) would run an invalid spec: "
                                 f"{where}: {why}") from None
        return self


def round_spec(run: SelfEmoRun, round_: int) -> SelfEmoRun:
    """The run as the children of round `round_` act on it.

    That is `run` itself, except round 1 of a run with `flywheel.goldWarmup`:
    there the generator writes that many seeded gold recognition answers and
    the trainer fine-tunes on them (`selfPlay.source: gold`, `training.algorithm:
    sft`), so the flywheel's first round starts from a model that has seen
    labels. One pure function, called by both children, keeps the warm-up in
    the run file instead of in a second run.
    """
    n = run.spec.flywheel.gold_warmup
    if round_ != 1 or not n:
        return run
    data = run.model_dump(by_alias=True, mode="json")
    # intent steers only the expression task, which the warm-up does not run; a `predicted`
    # intent would otherwise make the view invalid (it needs the understanding task)
    data["spec"]["selfPlay"].update(source=Source.gold.value, tasks=[Task.recognition.value], promptsPerRound=n,
                                    intent=Intent.gold.value)
    # supervised only: the run's SELF-GRPO rate belongs to the flywheel rounds after it
    data["spec"]["training"].update(algorithm=Algorithm.sft.value, grpoLearningRate=None)
    data["spec"]["flywheel"]["goldWarmup"] = 0
    return SelfEmoRun.model_validate(data)


# --------------------------------------------------------------------------- helpers


def _check_uri(value: str, allowed: tuple[str, ...]):
    """Split a URI and reject unknown schemes and embedded credentials."""
    parts = urlsplit(value)
    if parts.scheme not in allowed:
        shown = ", ".join(f"{s}://" if s else "a plain path" for s in allowed)
        raise ValueError(f"unsupported scheme {parts.scheme!r}; use {shown}")
    if "@" in parts.netloc:
        raise ValueError("must not embed credentials (user:password@); use storage.credentialsSecret")
    return parts
