"""`dvc.yaml`, `params.yaml`, `dataset.yaml` and the stage modules agree with each other."""

from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path

import pytest
import yaml

from reprokit.config import flatten

STAGES = ("prepare", "featurize", "train", "evaluate", "package")
# Modules that only log or report: changing them must not re-run stages.
NON_OUTPUT_MODULES = {"reprokit.tracking", "reprokit.stage"}


@pytest.fixture(scope="module")
def pipeline(repo):
    return yaml.safe_load((repo / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def files(repo):
    return {
        "params.yaml": flatten(yaml.safe_load((repo / "params.yaml").read_text())),
        "dataset.yaml": yaml.safe_load((repo / "dataset.yaml").read_text()),
    }


def stage_args(stage: dict):
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"], stage["cmd"]
    module = importlib.import_module(words[2])
    return words[2], module, module.parse_args(words[3:])


def paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_the_graph_is_prepare_featurize_train_evaluate_package(pipeline):
    assert tuple(pipeline["stages"]) == STAGES


@pytest.mark.parametrize("name", STAGES)
def test_every_listed_param_exists(pipeline, files, name):
    for entry in pipeline["stages"][name].get("params", []):
        if isinstance(entry, dict):
            ((file, keys),) = entry.items()
            for key in keys:
                assert key in files[file], f"{name}: {file} has no key {key}"
        else:
            keys = files["params.yaml"]
            assert entry in keys or any(k.startswith(entry + ".") for k in keys), f"{name}: params.yaml has no {entry}"


@pytest.mark.parametrize("name", STAGES)
def test_every_path_in_the_command_is_a_dep_or_out_and_back(pipeline, name):
    stage = pipeline["stages"][name]
    module_name, _, args = stage_args(stage)
    assert module_name == f"reprokit.{name}"
    arg_paths = {v for k, v in vars(args).items() if k not in ("contract", "params")}
    outs = set(paths(stage.get("outs"))) | set(paths(stage.get("metrics"))) | set(paths(stage.get("plots")))
    data_deps = {d for d in stage["deps"] if not d.startswith("src/") and "${" not in d}
    assert args.contract == "dataset.yaml" and args.params == "params.yaml"
    assert arg_paths == data_deps | outs, f"{name}: command paths and declared deps/outs differ"


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_exactly_the_modules_that_shape_outputs(repo, pipeline, name):
    """A stage depends on its module and every project module it imports that can change its outputs."""
    seen, todo = set(), [f"reprokit.{name}"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        tree = ast.parse((repo / "src" / (module.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reprokit"):
                if node.module == "reprokit":  # `from reprokit import tracking`
                    todo += [f"reprokit.{alias.name}" for alias in node.names]
                else:
                    todo.append(node.module)
    expected = {f"src/{m.replace('.', '/')}.py" for m in seen - NON_OUTPUT_MODULES}
    declared = {d for d in pipeline["stages"][name]["deps"] if d.startswith("src/")}
    assert declared == expected


def test_source_track_is_a_dependency(pipeline, files):
    assert "${source.track}" in pipeline["stages"]["prepare"]["deps"]
    assert pipeline["vars"] == ["dataset.yaml:source"]
    assert Path(files["dataset.yaml"]["source"]["track"]).name == "uv.lock"


def test_plots_render_files_that_evaluate_writes(repo, pipeline):
    _, _, args = stage_args(pipeline["stages"]["evaluate"])
    written = {
        f"{args.plots_dir}/{n}.json"
        for n in ("roc", "precision_recall", "calibration", "confusion", "feature_importance")
    }
    rendered = set()
    for plot in pipeline["plots"]:
        if isinstance(plot, dict):
            ((_, spec),) = plot.items()
            rendered |= set(spec["y"])
        else:
            assert plot == args.images_dir
    assert rendered == written


def test_every_output_is_ignored_by_git_through_dvc(repo, pipeline):
    for stage in pipeline["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            cached = not (isinstance(entry, dict) and entry[path].get("cache") is False)
            ignore = repo / Path(path).parent / ".gitignore"
            listed = ignore.exists() and f"/{Path(path).name}" in ignore.read_text().split()
            assert listed == cached, path


def test_every_tunable_param_reruns_some_stage(pipeline, files):
    """`dvc exp run -S <key>=<value>` has an effect for every key of the stage sections."""
    listed = [
        entry for stage in pipeline["stages"].values() for entry in stage.get("params", []) if isinstance(entry, str)
    ]
    tunable = [
        k for k in files["params.yaml"] if k.split(".")[0] in ("base", "split", "featurize", "train", "evaluate")
    ]
    for key in tunable:
        assert any(key == entry or key.startswith(entry + ".") for entry in listed), f"no stage re-runs on {key}"
    # and no stage lists the keys that only steer logging or the release gate
    assert not any(entry.split(".")[0] in ("tracking", "gate") for entry in listed)
