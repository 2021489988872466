"""plans.json round-trips exactly, matches its shipped JSON Schema, and the shipped presets match the code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from amos_autoseg.errors import InputError, UsageError
from amos_autoseg.fingerprint.model import CaseFingerprint, Fingerprint, IntensityStats
from amos_autoseg.planning.planner import plan_experiment
from amos_autoseg.planning.plans import Plans
from amos_autoseg.planning.presets import builtin_presets, load_preset
from amos_autoseg.planning.schema import plans_schema, repository_files
from amos_autoseg.planning.settings import PlannerSettings

PLANS_DIR = Path(__file__).resolve().parents[1] / "plans"


def _fingerprint() -> Fingerprint:
    ct = [CaseFingerprint(f"amos_{i:04d}", "CT", "venous", [2.5 + i % 3, 0.75, 0.75], [120, 512, 512],
                          [110 + 4 * i, 400, 380 + 2 * i], {1: 500, 6: 9000}) for i in range(1, 7)]
    mri = [CaseFingerprint(f"amos_{500 + i:04d}", "MRI", "unknown", [6.0, 1.3, 1.3], [60, 320, 320],
                           [50, 200, 210], {1: 300}) for i in range(1, 4)]
    stats = IntensityStats(1000, 55.5, 120.25, -1000.0, 1500.0, -950.0, 60.0, 300.0)
    return Fingerprint("synthetic", {i: f"organ{i}" for i in range(16)} | {0: "background"}, ct + mri,
                       {"CT": stats, "MRI": stats}, {}, {}, {}, 0.6, 1000)


@pytest.fixture(scope="module")
def plans() -> Plans:
    return plan_experiment(_fingerprint())


def test_plan_round_trips_through_json_text(plans, tmp_path):
    text = json.dumps(plans.to_json())
    again = Plans.from_json(json.loads(text))
    assert again == plans
    plans.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path / "plans.json") == plans
    assert json.loads((tmp_path / "plans.json").read_text()) == plans.to_json()


def test_contract_keys_present(plans):
    data = plans.to_json()
    full = data["configurations"]["3d_fullres"]
    for key in ("spacing", "patch_size", "batch_size"):
        assert key in full
    for key in ("strides", "kernel_sizes", "features_per_stage"):
        assert key in full["network"]
    assert data["normalization"]["CT"]["scheme"] == "ct"
    assert {"clip_low", "clip_high", "mean", "std"} <= set(data["normalization"]["CT"])
    assert data["normalization"]["MRI"]["scheme"] == "zscore"
    assert data["planner"]["settings"] == PlannerSettings().to_json()
    assert any("own statistics" in d for d in data["planner"]["deviations"])


def test_loading_refuses_unknown_keys_and_versions(plans):
    data = plans.to_json()
    data["configurations"]["3d_fullres"]["patch"] = [1, 2, 3]
    with pytest.raises(InputError, match="unknown key"):
        Plans.from_json(data)
    data = plans.to_json()
    data["schema_version"] = 99
    with pytest.raises(InputError, match="schema_version"):
        Plans.from_json(data)


def test_plan_validates_against_generated_schema(plans):
    jsonschema = pytest.importorskip("jsonschema")
    schema = plans_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(plans.to_json(), schema)
    bad = plans.to_json()
    bad["configurations"]["2d"]["batch_size"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_schema_lists_required_and_optional_keys():
    schema = plans_schema()
    assert {"dataset_name", "configurations", "normalization"} <= set(schema["required"])
    assert "training" not in schema["required"]  # has a default
    config = schema["$defs"]["ConfigurationPlan"]
    assert config["additionalProperties"] is False
    assert config["properties"]["patch_size"] == {"type": "array", "items": {"type": "integer"}}
    assert schema["properties"]["labels"]["propertyNames"] == {"pattern": "^-?[0-9]+$"}


def test_shipped_files_match_the_code():
    for rel, content in repository_files().items():
        path = PLANS_DIR / rel
        assert path.is_file(), f"{path} missing; run python -m amos_autoseg.planning.schema plans/"
        assert json.loads(path.read_text()) == content, f"{path} is stale; regenerate it"
    shipped = {p.stem for p in (PLANS_DIR / "presets").glob("*.json")}
    assert shipped == set(builtin_presets())


def test_presets_load_by_name_and_file(tmp_path):
    resenc = load_preset("resenc-l")
    assert resenc.architecture == "ResidualEncoderUNet" and resenc.gpu_memory_gb == 24
    assert resenc.reference(3) == pytest.approx(2.1e9)
    custom = resenc.replace(name="mine", gpu_memory_gb=48.0)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(custom.to_json()))
    assert load_preset(path) == custom
    assert load_preset(path).reference(3) == pytest.approx(4.2e9)


@pytest.mark.parametrize("content", ['{"architecture": "UNETR"}', '{"gpu_memory_gb": -1}', '{"colour": 1}', "{"])
def test_bad_preset_files_are_usage_errors(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError):
        load_preset(path)
    with pytest.raises(UsageError, match="not a preset"):
        load_preset("no-such-preset")
