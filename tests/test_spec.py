"""The run spec: defaults, examples, the invalid-manifest corpus, the CRD."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from selfemo.cli import main
from selfemo.crd import crd, crd_yaml, openapi_schema
from selfemo.runfile import RunFileError, check_manifest, load_run, load_runs
from selfemo.spec import SelfEmoRunSpec, round_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
INVALID = sorted((REPO / "tests" / "manifests" / "invalid").glob("*.yaml"))


def crd_validate(doc) -> None:
    """Validate like the API server: the CRD schema is OpenAPI 3.0, i.e. JSON
    Schema draft 4 semantics (boolean exclusiveMinimum)."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate(doc)


def _expected_path(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <field path>'"
    return first.removeprefix("# expect: ").strip()


def test_only_model_base_is_required():
    spec = SelfEmoRunSpec.model_validate({"model": {"base": "Qwen/Qwen3-8B"}})
    assert spec.self_play.group_size == 8
    assert spec.rewards.smoothing == 0.1
    assert spec.flywheel.early_stop.patience == 2
    assert spec.training.algorithm == "self-grpo"
    assert spec.storage.credentials_secret == ""
    with pytest.raises(ValueError, match="model"):
        SelfEmoRunSpec.model_validate({})


def test_gold_source_is_the_sft_baseline_and_checks_its_partners():
    base = {"model": {"base": "smollm2-135m-instruct"}}
    assert SelfEmoRunSpec.model_validate(base).self_play.source == "model"
    gold = SelfEmoRunSpec.model_validate({**base, "selfPlay": {"tasks": ["recognition"], "source": "gold", "groupSize": 1},
                                          "flywheel": {"keepPerPrompt": 1}, "training": {"algorithm": "sft"}})
    assert gold.self_play.source == "gold" and gold.training.algorithm == "sft"
    cases = [({"tasks": ["recognition"], "source": "gold"}, {}, "spec.selfPlay.source", "training.algorithm: sft"),
             ({"tasks": ["recognition", "understanding"], "source": "gold"}, {"algorithm": "sft"},
              "spec.selfPlay.source", "tasks: [recognition]"),
             ({"tasks": ["recognition"], "source": "teacher"}, {"algorithm": "sft"}, "spec.selfPlay.source", "model")]
    for self_play, training, path, words in cases:
        doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "g"},
               "spec": {**base, "selfPlay": self_play, "training": training}}
        run, problems = check_manifest(doc)
        assert run is None and [p.path for p in problems] == [path], problems
        assert words in problems[0].message, problems[0].message


def test_gold_warmup_makes_round_one_gold_sft_and_leaves_the_rest_alone():
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["flywheel"] = {**doc["spec"]["flywheel"], "rounds": 3, "goldWarmup": 48}
    run, problems = check_manifest(doc)
    assert run is not None, problems
    warm = round_spec(run, 1)
    assert warm.spec.self_play.source == "gold" and list(warm.spec.self_play.tasks) == ["recognition"]
    assert warm.spec.self_play.prompts_per_round == 48 and warm.spec.training.algorithm == "sft"
    assert run.spec.self_play.source == "model" and run.spec.training.algorithm == "self-grpo"  # the input is untouched
    changed = {("selfPlay", "source"), ("selfPlay", "tasks"), ("selfPlay", "promptsPerRound"),
               ("training", "algorithm"), ("flywheel", "goldWarmup")}
    before, after = (r.spec.model_dump(by_alias=True, mode="json") for r in (run, warm))
    differ = {(section, key) for section in before for key in (before[section] if isinstance(before[section], dict) else [])
              if before[section][key] != after[section][key]}
    assert differ == changed, differ
    assert round_spec(run, 0) is run and round_spec(run, 2) is run and round_spec(run, 3) is run
    plain, _ = check_manifest(yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text()))
    assert plain.spec.flywheel.gold_warmup == 0 and round_spec(plain, 1) is plain


@pytest.mark.parametrize("flywheel, self_play, training, words", [
    ({"rounds": 1, "goldWarmup": 8}, {}, {}, "rounds must be at least 2"),
    ({"rounds": 3, "goldWarmup": 8}, {"tasks": ["recognition"], "source": "gold", "groupSize": 1}, {"algorithm": "sft"},
     "set goldWarmup: 0"),
])
def test_gold_warmup_checks_its_partners(flywheel, self_play, training, words):
    doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "w"},
           "spec": {"model": {"base": "smollm2-135m-instruct"}, "flywheel": {"keepPerPrompt": 1, **flywheel},
                    "selfPlay": self_play, "training": training}}
    run, problems = check_manifest(doc)
    assert run is None and len(problems) == 1 and words in problems[0].message, problems


def test_gold_warmup_of_a_predicted_intent_run_is_valid():
    """intent `predicted` needs the understanding task, which the warm-up view
    drops: the view resets intent (it steers expression only) instead of failing at round 1."""
    doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "w"},
           "spec": {"model": {"base": "smollm2-135m-instruct"}, "flywheel": {"rounds": 3, "goldWarmup": 8},
                    "selfPlay": {"intent": "predicted"}}}
    run, problems = check_manifest(doc)
    assert run is not None, problems
    assert round_spec(run, 1).spec.self_play.intent == "gold" and run.spec.self_play.intent == "predicted"


def test_grpo_learning_rate_is_for_self_grpo_steps_only():
    doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "w"},
           "spec": {"model": {"base": "smollm2-135m-instruct"}, "flywheel": {"rounds": 3, "goldWarmup": 8},
                    "training": {"learningRate": 2e-5, "grpoLearningRate": 2e-6}}}
    run, problems = check_manifest(doc)
    assert run is not None, problems
    # the warm-up view is supervised only, so it drops the rate (its validator would reject it: below)
    assert round_spec(run, 1).spec.training.grpo_learning_rate is None
    assert round_spec(run, 2).spec.training.grpo_learning_rate == 2e-6
    doc["spec"]["flywheel"] = {"keepPerPrompt": 1}
    doc["spec"]["selfPlay"] = {"tasks": ["recognition"], "source": "gold", "groupSize": 1}
    doc["spec"]["training"]["algorithm"] = "sft"
    run, problems = check_manifest(doc)
    assert run is None and [p.path for p in problems] == ["spec.training"], problems
    assert "grpoLearningRate" in problems[0].message and "sft" in problems[0].message, problems[0].message


def test_an_invalid_warmup_view_fails_at_submission(monkeypatch):
    """Whatever makes round 1's view invalid is reported by `selfemo validate`,
    naming the warm-up and the field, not first by the round-1 children."""
    import selfemo.spec as spec

    def view_without_intent_reset(run, round_):  # round_spec as it was before the intent reset
        data = run.model_dump(by_alias=True, mode="json")
        data["spec"]["selfPlay"].update(source="gold", tasks=["recognition"])
        data["spec"]["training"]["algorithm"] = "sft"
        data["spec"]["flywheel"]["goldWarmup"] = 0
        return spec.SelfEmoRun.model_validate(data)

    monkeypatch.setattr(spec, "round_spec", view_without_intent_reset)
    doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "w"},
           "spec": {"model": {"base": "smollm2-135m-instruct"}, "flywheel": {"rounds": 3, "goldWarmup": 8},
                    "selfPlay": {"intent": "predicted"}}}
    run, problems = check_manifest(doc)
    assert run is None and len(problems) == 1, problems
    assert problems[0].path == "spec.flywheel.goldWarmup", problems
    message = problems[0].message
    assert message.startswith("round 1 (the gold warm-up) would run an invalid spec: spec.selfPlay: intent:"), message
    assert "understanding" in message, message
    doc["spec"]["selfPlay"] = {}  # the same view of a run without the predicted intent is valid
    assert check_manifest(doc)[0] is not None


def test_calibrated_label_sampling_needs_label_answers():
    base = {"model": {"base": "smollm2-135m-instruct"}}
    assert SelfEmoRunSpec.model_validate(base).self_play.label_sampling == "policy"
    ok = SelfEmoRunSpec.model_validate({**base, "selfPlay": {"answers": "labels", "labelSampling": "calibrated"}})
    assert ok.self_play.label_sampling == "calibrated"
    doc = {"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "metadata": {"name": "c"},
           "spec": {**base, "selfPlay": {"labelSampling": "calibrated"}}}
    run, problems = check_manifest(doc)
    assert run is None and "set answers: labels" in problems[0].message, problems


def test_every_field_has_a_description():
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "description" not in prop:
                    missing.append(f"{path}.{name}")
                walk(prop, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}{{}}")

    walk(openapi_schema(SelfEmoRunSpec), "spec")
    assert not missing, missing


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path):
    run = load_run(path)
    assert run.metadata.name
    # and valid against the CRD schema the API server will enforce
    crd_validate(yaml.safe_load(path.read_text()))


def test_examples_cover_the_cluster_and_the_laptop():
    names = {p.name for p in EXAMPLES}
    assert {"run.yaml", "quickstart.yaml"} <= names
    assert load_run(REPO / "examples" / "run.yaml").spec.model.base == "Qwen/Qwen3-8B"
    quick = load_run(REPO / "examples" / "quickstart.yaml").spec
    assert quick.model.base == "smollm2-135m-instruct"
    assert quick.resources.generator.gpus == 0 and "://" not in quick.storage.uri


def test_invalid_corpus_is_large_enough():
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_names_the_field(path):
    expected = _expected_path(path)
    with pytest.raises(RunFileError) as info:
        load_runs(path)
    paths = [p.path for p in info.value.problems]
    assert expected in paths, f"expected a problem at {expected}, got {[str(p) for p in info.value.problems]}"
    assert expected in str(info.value)


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["selfPlay"]["groupSize"] = 0
    doc["spec"]["rewards"] = {"smoothing": -1}
    doc["spec"]["bogus"] = 1
    run, problems = check_manifest(doc)
    assert run is None
    assert {"spec.selfPlay.groupSize", "spec.rewards.smoothing", "spec.bogus"} <= {p.path for p in problems}


def test_yaml_syntax_error_gives_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: selfemo.dev/v1alpha1\nkind: SelfEmoRun\nspec: {model: [\n")
    with pytest.raises(RunFileError, match=r"bad\.yaml:\d+:\d+"):
        load_runs(bad)


def test_multi_document_file(tmp_path):
    text = (REPO / "examples" / "quickstart.yaml").read_text()
    f = tmp_path / "two.yaml"
    f.write_text(text + "\n---\n" + text.replace("name: quickstart", "name: quickstart-b"))
    assert [r.metadata.name for r in load_runs(f)] == ["quickstart", "quickstart-b"]


def test_validate_cli(capsys):
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    assert capsys.readouterr().out.count("ok: ") == len(EXAMPLES)
    bad = REPO / "tests" / "manifests" / "invalid" / "keep-more-than-group.yaml"
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "spec.flywheel.keepPerPrompt" in err and "Traceback" not in err


def test_validate_cli_show_defaults(capsys):
    assert main(["validate", "--show-defaults", str(REPO / "examples" / "quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    spec = json.loads(out[: out.rindex("}") + 1])["spec"]
    assert spec["rewards"]["weights"] == {"alignment": 1.0, "consistency": 0.5, "format": 0.2}


# ----------------------------------------------------------------------------- CRD


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_crd_schema_is_structural():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert "const" not in node, path
        if path.endswith(".properties"):
            continue
        if any(k in node for k in ("properties", "items", "enum", "minimum", "maxLength")):
            assert "type" in node, f"untyped schema node at {path}"
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node:
                assert isinstance(node[bound], bool), f"{path}: OpenAPI v3.0 wants boolean {bound}"


def test_crd_rejects_what_pydantic_rejects_on_types():
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["selfPlay"]["temperature"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        crd_validate(doc)
    doc["spec"]["selfPlay"]["temperature"] = 1.0
    doc["spec"]["evaluation"]["decoding"] = "beam"
    with pytest.raises(jsonschema.ValidationError, match="beam"):
        crd_validate(doc)


def test_crd_printer_columns_and_status():
    version = crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Round", "Best W-F1", "Age"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "Succeeded" in status["properties"]["phase"]["enum"]


def test_crd_cli_matches_module(capsys):
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()
    assert main(["crd", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == crd()


def test_crd_is_accepted_by_kubernetes_validate(tmp_path):
    import kubernetes_validate

    kubernetes_validate.validate(crd(), "1.33", strict=True)


def test_run_spec_reference_is_current():
    from selfemo.specdoc import render

    assert (REPO / "docs" / "run-spec.md").read_text() == render(), "regenerate: python -m selfemo.specdoc > docs/run-spec.md"


def test_quality_conditions_validate_and_are_measured_against_one_baseline():
    """The issue-7 condition files differ only where their condition says; in
    particular they evaluate exactly like the zero-shot file, so round 0 is
    computed once and every condition is scored on the same utterances."""
    from selfemo.generator.evaluate import baseline_key

    quality = REPO / "bench" / "quality"
    runs = {p.stem: load_run(p) for p in sorted(quality.glob("*.yaml")) if p.stem != "zero-shot-slice"}
    assert {"zero-shot", "sft-gold", "self-emo", "recognition-only", "no-consistency"} <= set(runs)
    keys = {name: baseline_key(run, "transformers") for name, run in runs.items()}
    assert len(set(keys.values())) == 1, keys
    emo = runs["self-emo"].spec
    assert runs["recognition-only"].spec.self_play.tasks == ["recognition"] != emo.self_play.tasks
    assert runs["no-consistency"].spec.rewards.weights.consistency == 0 < emo.rewards.weights.consistency
    for name in ("sft-gold", "recognition-only", "no-consistency"):
        t = runs[name].spec.training
        same = ("learning_rate", "micro_batch_size", "gradient_accumulation", "warmup_ratio", "max_seq_len")
        assert [getattr(t, f) for f in same] == [getattr(emo.training, f) for f in same], name
    # the label-answer files: their free-text twin with selfPlay.answers: labels and nothing else changed
    for name in ("self-emo", "recognition-only", "no-consistency"):
        assert _without(runs[f"{name}-labels"], answers="labels") == _without(runs[name], answers="free"), name
    # the label-balanced try: condition 3L with label-balanced prompts and nothing else changed
    assert (_without(runs["self-emo-labels-balanced"], sampling="label-balanced")
            == _without(runs["self-emo-labels"], sampling="uniform"))
    # the dual-clip try: condition 3L with training.dualClip 3 and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip"], "training", dual_clip=3.0)
            == _without(runs["self-emo-labels"], "training", dual_clip=None))
    # the three-times-budget pair: condition 2 and 3L-dc with 3x the prompts per round and nothing else changed
    assert _without(runs["sft-gold-3x"], prompts_per_round=720) == _without(runs["sft-gold"], prompts_per_round=240)
    assert (_without(runs["self-emo-labels-dualclip-3x"], prompts_per_round=96)
            == _without(runs["self-emo-labels-dualclip"], prompts_per_round=32))
    # the calibrated-sampling try: 3L-dc with selfPlay.labelSampling calibrated and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-cal"], label_sampling="calibrated")
            == _without(runs["self-emo-labels-dualclip"], label_sampling="policy"))
    # the group-size try: 3L-dc with eight candidates per prompt and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-g8"], group_size=8)
            == _without(runs["self-emo-labels-dualclip"], group_size=4))
    # the gold-warm-up try: 3L-dc whose round 1 is SFT on 128 gold answers, and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-gw"], "flywheel", gold_warmup=128)
            == _without(runs["self-emo-labels-dualclip"], "flywheel", gold_warmup=0))
    # the warm-up's KL reference: 3L-dc-gw with training.klReference previous and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-gw-klprev"], "training", kl_reference="previous")
            == _without(runs["self-emo-labels-dualclip-gw"], "training", kl_reference="base"))
    # two flywheel rounds after the warm-up: 3L-dc-gw-klprev with rounds 3 and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-gw-klprev-r3"], "flywheel", rounds=3)
            == _without(runs["self-emo-labels-dualclip-gw-klprev"], "flywheel", rounds=2))
    # the slower SELF-GRPO: 3L-dc-gw-klprev with training.grpoLearningRate 2e-6 and nothing else changed
    assert (_without(runs["self-emo-labels-dualclip-gw-klprev-lr"], "training", grpo_learning_rate=2e-6)
            == _without(runs["self-emo-labels-dualclip-gw-klprev"], "training", grpo_learning_rate=None))
    # and without the flywheel rounds' SFT on their kept answers: 3L-dc-gw-klprev-lr with sftWarmup false
    assert (_without(runs["self-emo-labels-dc-gw-klprev-lr-nosft"], "training", sft_warmup=False)
            == _without(runs["self-emo-labels-dualclip-gw-klprev-lr"], "training", sft_warmup=True))
    for name in ("sft-gold", "self-emo", "self-emo-labels", "self-emo-labels-dualclip", "sft-gold-3x", "self-emo-labels-dualclip-3x",
                 "self-emo-labels-dualclip-g8", "self-emo-labels-dualclip-cal", "self-emo-labels-dualclip-gw",
                 "self-emo-labels-dualclip-gw-klprev", "self-emo-labels-dualclip-gw-klprev-r3",
                 "self-emo-labels-dualclip-gw-klprev-lr", "self-emo-labels-dc-gw-klprev-lr-nosft"):  # the second seeds differ in their seeds and name only
        first, second = runs[name].model_dump(), runs[f"{name}-s1"].model_dump()
        assert (second["metadata"]["name"], second["spec"]["self_play"]["seed"], second["spec"]["training"]["seed"]) == (f"{name}-s1", 1, 1)
        for doc, seed in ((first, 0), (second, 1)):
            doc["metadata"]["name"] = name
            assert doc["spec"]["self_play"].pop("seed") == doc["spec"]["training"].pop("seed") == seed
        assert second == first, name


def _without(run, section: str = "self_play", **fields) -> dict:
    """The run as a dict without its name and the given fields of one spec
    section (selfPlay unless named), after checking that they hold the given values."""
    doc = run.model_dump()
    doc["metadata"].pop("name")
    for field, value in fields.items():
        assert doc["spec"][section].pop(field) == value, (run.metadata.name, section, field)
    return doc
