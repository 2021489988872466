"""`amos-autoseg plan` end to end on a tiny synthetic folder: outputs, idempotence, split safety, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from amos_autoseg.cli.main import main
from amos_autoseg.planning.dataset_ref import DatasetRef
from amos_autoseg.planning.plans import Plans
from amos_autoseg.planning.splits import load_splits

OUTPUTS = ("fingerprint.json", "plans.json", "splits.json", "dataset_ref.json", "plan_config.json")


@pytest.fixture(autouse=True)
def _few_samples(monkeypatch):
    """Sample 1e5 foreground intensities instead of 1e8: the planner's rules do not depend on the count."""
    import amos_autoseg.fingerprint.extract as extract

    original = extract.extract_fingerprint
    monkeypatch.setattr(extract, "extract_fingerprint",
                        lambda dataset, workers, cache_dir=None: original(dataset, workers, cache_dir, 10**5))


@pytest.fixture(scope="module")
def planned(tiny_dataset, tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("exp")
    import amos_autoseg.fingerprint.extract as extract

    original = extract.extract_fingerprint
    extract.extract_fingerprint = lambda dataset, workers, cache_dir=None: original(dataset, workers, cache_dir, 10**5)
    try:
        assert main(["plan", str(tiny_dataset), "--exp", str(exp), "--workers", "0"]) == 0
    finally:
        extract.extract_fingerprint = original
    return exp


def test_writes_every_output(planned, tiny_dataset):
    for name in OUTPUTS:
        assert (planned / name).is_file(), name
    plans = Plans.load(planned / "plans.json")
    assert "3d_fullres" in plans.configurations and plans.modalities == ["CT", "MRI"]
    assert plans.normalization["CT"].scheme == "ct" and plans.normalization["MRI"].scheme == "zscore"
    splits = load_splits(planned / "splits.json")
    assert len(splits) == 5
    ref = DatasetRef.load(planned / "dataset_ref.json")
    assert Path(ref.data_dir) == Path(tiny_dataset).resolve() and ref.meta is None
    assert ref.case_ids == sorted(c for f in splits for c in f["val"])
    assert {ref.modalities[c] for c in ref.case_ids} == {"CT", "MRI"}
    config = json.loads((planned / "plan_config.json").read_text())
    assert config["preset"] == "nnunet-default" and config["settings"]["gpu_memory_gb"] == 8.0


def test_rerun_is_idempotent(planned, tiny_dataset):
    before = {n: (planned / n).read_bytes() for n in OUTPUTS}
    assert main(["plan", str(tiny_dataset), "--exp", str(planned), "--workers", "0"]) == 0
    assert {n: (planned / n).read_bytes() for n in OUTPUTS} == before
    assert not [p for p in planned.iterdir() if p.name.startswith(".tmp-")]


def test_replan_with_preset_keeps_splits(planned, tiny_dataset, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(planned, exp)
    splits = (exp / "splits.json").read_bytes()
    assert main(["plan", str(tiny_dataset), "--exp", str(exp), "--workers", "0", "--preset", "resenc-l",
                 "--gpu-memory-gb", "12", "--configs", "3d_fullres", "--split-seed", "7"]) == 0
    plans = Plans.load(exp / "plans.json")
    assert list(plans.configurations) == ["3d_fullres"]
    assert plans.configurations["3d_fullres"].network.architecture == "ResidualEncoderUNet"
    assert plans.planner["settings"]["gpu_memory_gb"] == 12.0
    assert (exp / "splits.json").read_bytes() == splits  # never reshuffled by re-planning


def test_changed_case_set_is_refused_unless_forced(planned, tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    spec = json.loads((data / "dataset.json").read_text())
    spec["training"] = spec["training"][1:]
    spec["numTraining"] = len(spec["training"])
    (data / "dataset.json").write_text(json.dumps(spec))
    exp = tmp_path / "exp"
    shutil.copytree(planned, exp)
    before = {n: (exp / n).read_bytes() for n in OUTPUTS}
    assert main(["plan", str(data), "--exp", str(exp), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "splits.json" in err and "--force-splits" in err
    assert {n: (exp / n).read_bytes() for n in OUTPUTS} == before  # nothing half-updated
    assert main(["plan", str(data), "--exp", str(exp), "--workers", "0", "--force-splits"]) == 0
    assert len({c for f in load_splits(exp / "splits.json") for c in f["val"]}) == len(spec["training"])


@pytest.mark.parametrize("extra,needle", [
    (["--gpu-memory-gb", "0"], "gpu_memory_gb"),
    (["--preset", "nope"], "not a preset"),
])
def test_bad_options_exit_2(tiny_dataset, tmp_path, capsys, extra, needle):
    assert main(["plan", str(tiny_dataset), "--exp", str(tmp_path / "exp"), "--workers", "0", *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "exp" / "plans.json").exists()


def test_missing_data_folder_exit_2(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "absent"), "--exp", str(tmp_path / "exp")]) == 2
    assert "absent" in capsys.readouterr().err


def test_meta_csv_routes_modalities_and_is_recorded(tiny_dataset, tmp_path):
    meta = tmp_path / "meta.csv"
    ids = json.loads((Path(tiny_dataset) / "dataset.json").read_text())["training"]
    rows = ["case_id,modality"] + [f"{Path(e['image']).name.split('.')[0]},MRI" for e in ids]
    meta.write_text("\n".join(rows) + "\n")
    exp = tmp_path / "exp"
    assert main(["plan", str(tiny_dataset), "--exp", str(exp), "--workers", "0", "--meta", str(meta)]) == 0
    plans = Plans.load(exp / "plans.json")
    assert plans.modalities == ["MRI"] and set(plans.normalization) == {"MRI"}
    ref = DatasetRef.load(exp / "dataset_ref.json")
    assert ref.meta == str(meta.resolve()) and set(ref.modalities.values()) == {"MRI"}
