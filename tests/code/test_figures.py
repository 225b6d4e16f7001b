"""Images are drawn in the project's fixed style, whatever the user's matplotlib configuration.

matplotlib reads one `matplotlibrc` on import: `$MATPLOTLIBRC`, else `./matplotlibrc` in the
current directory, else `$MPLCONFIGDIR/matplotlibrc`, else `~/.config/matplotlib/matplotlibrc`.
Each way is tried with a hostile file, in a fresh interpreter (the file is read once, on
import), and evaluate's and the monitor's images (DVC outputs) and the report's must be the
bytes drawn with no user file at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HOSTILE = """\
lines.linewidth: 6
lines.antialiased: False
axes.facecolor: black
axes.prop_cycle: cycler('color', ['ff00ff', '00ff00'])
axes.grid: True
axes.titlesize: 30
font.family: serif
font.size: 19
figure.facecolor: yellow
figure.dpi: 33
figure.autolayout: True
savefig.facecolor: red
savefig.transparent: True
savefig.bbox: tight
image.cmap: viridis
text.antialiased: False
patch.force_edgecolor: True
legend.frameon: False
timezone: Asia/Tokyo
"""

# Draws the images with the project's functions, then one figure outside the project's style
# (the control: proves the user's file was read, and is in force again after the project's block).
DRAW = """
import hashlib, json, sys
from pathlib import Path

import matplotlib
import numpy as np

from reprokit.core.drift import Comparison
from reprokit.stages.evaluate import curves, save_images as evaluate_images
from reprokit.core.figures import save_png
from reprokit.monitoring.batch_drift import save_images as monitor_images
from reprokit.commands.report import compare_plots

out = Path(sys.argv[1])
rc = {"file": matplotlib.matplotlib_fname(), "linewidth": matplotlib.rcParams["lines.linewidth"]}
rng = np.random.default_rng(0)
y = rng.integers(0, 2, 200)
evaluate_images(curves(y, np.clip(y * 0.4 + rng.uniform(size=200) * 0.6, 0, 1), 5, 0.5), {"a": 0.1, "b": 0.02}, out)
shares = Comparison("chi2", 0.5, 0.123, ("a", "b", "c"), (0.2, 0.3, 0.5), (0.1, 0.4, 0.5), 10, 10)
monitor_images({"prediction": shares, "region": shares}, ["prediction", "region"], out)
compare_plots("HEAD", Path.cwd(), out)  # base: the committed curve, head: the workspace's
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1], [0, 1])
save_png(fig, out / "control.png")
rc["images"] = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
print(json.dumps(rc))
"""


ROC = [{"fpr": 0, "tpr": 0}, {"fpr": 0.2, "tpr": 0.7}, {"fpr": 1, "tpr": 1}]
WAYS = ("MATPLOTLIBRC", "MPLCONFIGDIR", "current directory", "home")


def draw(root: Path, way: str | None = None) -> dict:
    """Run DRAW in a fresh interpreter, in a git repository holding a base and a head ROC
    curve for the report, with an empty home and config dir, and the hostile file put
    where `way` says (None: nowhere)."""
    home, cwd, config = root / "home", root / "cwd", root / "config"
    for folder in (home, cwd / "metrics" / "plots", config):
        folder.mkdir(parents=True)
    git = ["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (cwd / "metrics/plots/roc.json").write_text(json.dumps(ROC[::2]))
    subprocess.run([*git, "add", "metrics"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (cwd / "metrics/plots/roc.json").write_text(json.dumps(ROC))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPL", "MATPLOTLIB", "XDG_CONFIG"))}
    env |= {"HOME": str(home), "MPLCONFIGDIR": str(config)}
    if way == "MATPLOTLIBRC":
        (root / "hostile.rc").write_text(HOSTILE)
        env["MATPLOTLIBRC"] = str(root / "hostile.rc")
    elif way == "MPLCONFIGDIR":
        (config / "matplotlibrc").write_text(HOSTILE)
    elif way == "current directory":
        (cwd / "matplotlibrc").write_text(HOSTILE)
    elif way == "home":  # matplotlib's default config dir, when MPLCONFIGDIR is not set
        del env["MPLCONFIGDIR"]
        (home / ".config" / "matplotlib").mkdir(parents=True)
        (home / ".config" / "matplotlib" / "matplotlibrc").write_text(HOSTILE)
    done = subprocess.run(
        [sys.executable, "-c", DRAW, str(root / "images")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    return draw(tmp_path_factory.mktemp("plain"))


def test_the_plain_drawing_has_every_image_and_reads_no_user_file(plain):
    assert plain["file"].endswith("mpl-data/matplotlibrc") and plain["linewidth"] == 1.5
    assert set(plain["images"]) == {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion_matrix.png",
        "feature_importance.png",
        "prediction.png",
        "region.png",
        "roc_compare.png",
        "control.png",
    }


@pytest.mark.parametrize("way", WAYS)
def test_a_hostile_matplotlibrc_changes_no_image(tmp_path, plain, way):
    drawn = draw(tmp_path, way)
    assert drawn["linewidth"] == 6.0 and not drawn["file"].endswith("mpl-data/matplotlibrc")  # the file was read
    assert drawn["images"]["control.png"] != plain["images"]["control.png"]  # and it changes a plain figure
    project = {name: md5 for name, md5 in drawn["images"].items() if name != "control.png"}
    assert project == {name: md5 for name, md5 in plain["images"].items() if name != "control.png"}


def test_the_style_is_matplotlibs_defaults_and_leaves_the_callers_settings_alone():
    import matplotlib

    from reprokit.core.figures import STYLE, drawing

    with matplotlib.rc_context({"lines.linewidth": 6.0, "font.size": 19.0}):
        with drawing():
            assert matplotlib.rcParams["lines.linewidth"] == matplotlib.rcParamsDefault["lines.linewidth"]
            assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]
            assert all(matplotlib.rcParams[k] == v for k, v in STYLE.items())
        assert matplotlib.rcParams["lines.linewidth"] == 6.0 and matplotlib.rcParams["font.size"] == 19.0


def test_every_line_of_the_hostile_file_is_a_setting_matplotlib_accepts(tmp_path):
    """A bad line would be skipped with a warning, and test nothing."""
    from matplotlib import rc_params_from_file

    (tmp_path / "matplotlibrc").write_text(HOSTILE)
    params = rc_params_from_file(str(tmp_path / "matplotlibrc"), use_default_template=False)
    assert len(params) == len(HOSTILE.splitlines())
