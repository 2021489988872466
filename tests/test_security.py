"""Nothing the project loads can execute code: pickled checkpoints are refused, data paths stay in their folder.

Covered elsewhere (not repeated here): a model file with a pickle member (tests/test_packaging.py::
test_pickle_member_is_refused_and_never_loaded), zip members escaping the archive (test_packaging.py::
test_path_traversal_member_is_refused), dataset.json paths escaping the data folder at the loader
(tests/test_dataset.py::test_paths_escaping_the_data_folder_are_refused; through the CLI in
tests/test_reliability_bad_input.py, row ``path_traversal``).
"""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path


from amos_autoseg.cli.main import main
from reliability_helpers import REPO_PACKAGE, copy_exp, trained  # noqa: F401 - fixture


class _Payload:
    """Unpickling this calls ``open(sentinel, "w")``: a file appears when (and only when) code is executed."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _poison(checkpoint: Path, dest: Path, sentinel: Path) -> Path:
    """A copy of a real checkpoint with a pickle payload hidden among its (otherwise valid) entries."""
    import torch

    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data["log"] = {"note": _Payload(sentinel)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, dest)
    return dest


def _one_error(err: str, path: Path) -> str:
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert str(path) in errors[0] and "pickle" in errors[0], errors[0]
    assert "Traceback" not in err
    return errors[0]


def test_the_payload_is_live_when_loaded_unsafely(trained, tmp_path):
    """Guards the tests below: this poisoned checkpoint does run code under a plain ``torch.load``."""
    import torch

    sentinel = tmp_path / "pwned"
    bad = _poison(trained["exp"] / "3d_fullres" / "fold_0" / "checkpoint_final.pt", tmp_path / "bad.pt", sentinel)
    assert not sentinel.exists()
    torch.load(bad, map_location="cpu", weights_only=False)
    assert sentinel.exists()


def test_predict_refuses_a_checkpoint_with_a_pickle_payload(trained, tmp_path, capsys):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    final = exp / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    sentinel = tmp_path / "pwned"
    _poison(final, final, sentinel)
    out = tmp_path / "out"
    rc = main(["predict", str(exp), "--input", str(trained["inputs"]), "--output", str(out), "--device", "cpu",
               "--no-tta"])
    assert rc == 2
    _one_error(capsys.readouterr().err, final)
    assert not sentinel.exists(), "the payload was executed"
    assert not out.exists() or not list(out.glob("*.nii.gz"))


def test_train_resume_refuses_a_checkpoint_with_a_pickle_payload(trained, tmp_path, capsys):
    exp = copy_exp(trained["exp"], tmp_path / "exp")
    latest = exp / "3d_fullres" / "fold_1" / "checkpoint_latest.pt"
    sentinel = tmp_path / "pwned"
    _poison(exp / "3d_fullres" / "fold_0" / "checkpoint_latest.pt", latest, sentinel)
    before = latest.read_bytes()
    rc = main(["train", str(exp), "--fold", "1", "--device", "cpu", "--epochs", "2", "--iters-per-epoch", "1",
               "--val-iters", "0", "--workers", "0", "--no-validation", "--resume"])
    assert rc == 2
    _one_error(capsys.readouterr().err, latest)
    assert not sentinel.exists(), "the payload was executed"
    assert latest.read_bytes() == before  # not overwritten by a fresh run
    assert not (latest.parent / "checkpoint_final.pt").exists()


def test_a_plain_pickle_renamed_to_pt_is_refused(trained, tmp_path, capsys):
    import pickle

    exp = copy_exp(trained["exp"], tmp_path / "exp")
    final = exp / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    sentinel = tmp_path / "pwned"
    final.write_bytes(pickle.dumps({"format": 1, "model": _Payload(sentinel)}))
    rc = main(["predict", str(exp), "--input", str(trained["inputs"]), "--output", str(tmp_path / "out"),
               "--device", "cpu", "--no-tta"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(final) in err and not sentinel.exists()


def test_plan_refuses_dataset_paths_escaping_the_folder_without_reading_them(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    outside = tmp_path / "secret.nii.gz"
    shutil.copy(data / "imagesTr" / "amos_0001.nii.gz", outside)
    spec = json.loads((data / "dataset.json").read_text())
    spec["training"][0]["image"] = "./imagesTr/../../secret.nii.gz"  # exists, but outside DATA_DIR
    (data / "dataset.json").write_text(json.dumps(spec))
    exp = tmp_path / "exp"
    assert main(["plan", str(data), "--exp", str(exp), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "dataset.json" in err and "outside the data folder" in err
    assert not exp.exists()


# ---- a static guard: no loader in the package may unpickle or evaluate -------------------------------------

_FORBIDDEN_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
                    ("yaml", "load"), ("dill", "load"), ("dill", "loads"), ("joblib", "load")}
# pickle.loads(pickle.dumps(exc)) checks that an error of our own survives a worker round trip: bytes it just
# made, never a file.
_ALLOWED = {("utils/lifeline.py", "pickle", "loads")}


def _violations(tree: ast.AST, rel: str) -> list[str]:
    """Every call in ``tree`` that could unpickle or evaluate, as ``file:line: what``."""
    problems = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        f = call.func
        kwargs = {k.arg: k.value for k in call.keywords}
        if isinstance(f, ast.Name) and f.id in {"eval", "exec"}:
            problems.append(f"{rel}:{call.lineno}: {f.id}()")
        if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
            continue
        mod, attr = f.value.id, f.attr
        if (mod, attr) in _FORBIDDEN_CALLS and (rel, mod, attr) not in _ALLOWED:
            problems.append(f"{rel}:{call.lineno}: {mod}.{attr}")
        if mod == "torch" and attr == "load":
            wo = kwargs.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problems.append(f"{rel}:{call.lineno}: torch.load without weights_only=True")
        if mod == "np" and attr == "load":
            ap = kwargs.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                problems.append(f"{rel}:{call.lineno}: np.load with allow_pickle")
    return problems


def test_no_module_unpickles_evaluates_or_loads_torch_files_with_pickle():
    problems = []
    for path in sorted(REPO_PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO_PACKAGE).as_posix()
        problems += _violations(ast.parse(path.read_text(encoding="utf-8")), rel)
    assert not problems, problems


def test_the_static_guard_catches_what_it_looks_for():
    """The guard above is not vacuous: it flags each forbidden form in a sample module, and only those."""
    sample = ("import pickle, torch, numpy as np\n"
              "pickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\n"
              "eval('1')\ntorch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nmodel.eval()\n")
    flagged = [v.split(": ", 1)[1] for v in _violations(ast.parse(sample), "sample.py")]
    assert flagged == ["pickle.load", "torch.load without weights_only=True", "torch.load without weights_only=True",
                       "np.load with allow_pickle", "eval()"]
