"""deploy/: the Kubernetes manifests validate offline against the Kubernetes schemas and agree
with the service they run (its routes, settings, user and shutdown); the service takes its
settings from the environment the ConfigMap gives it. tests/container runs them with podman."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprokit.serving.serve import ROUTES
from reprokit.serving.settings import parse_args

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = "1.30.0"  # the oldest release the manifests promise to run on


def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def manifests() -> dict[str, dict]:
    """Each resource kustomization.yaml lists, by kind."""
    found = {}
    for name in kustomization()["resources"]:
        (document,) = yaml.safe_load_all((DEPLOY / name).read_text())
        found[document["kind"]] = document
    return found


def container() -> dict:
    (serve,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return serve


def test_every_file_is_listed_and_every_manifest_validates_strictly():
    import kubernetes_validate

    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(listed):
        for document in yaml.safe_load_all((DEPLOY / name).read_text()):
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
    assert set(manifests()) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_a_wrong_field_fails_validation():
    """The check above can fail: a misspelt field and a wrong type are refused."""
    import kubernetes_validate

    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    deployment = manifests()["Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_pieces_select_and_name_each_other():
    found = manifests()
    deployment, service = found["Deployment"], found["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert ports["http"] == 8080  # the image's CMD: --port 8080
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert container()["envFrom"] == [{"configMapRef": {"name": found["ConfigMap"]["metadata"]["name"]}}]
    # Voluntary disruptions always leave a pod serving: fewer may be down than the HPA keeps.
    assert (
        found["PodDisruptionBudget"]["spec"]["minAvailable"] < found["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in ROUTES and int(annotations["prometheus.io/port"]) == ports["http"]


def test_probes_ask_the_services_own_health_routes():
    serve = container()
    assert serve["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert serve["startupProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert serve[probe]["httpGet"]["path"] in ROUTES and serve[probe]["httpGet"]["port"] == "http"


def test_the_pod_runs_as_the_images_user_on_a_read_only_root():
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Containerfile").read_text(), re.MULTILINE)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == tuple(
        map(int, user.groups())
    )
    security = container()["securityContext"]
    assert security == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert [m["mountPath"] for m in container()["volumeMounts"]] == ["/tmp"]  # the only writable place
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_termination_leaves_time_for_the_pause_and_the_services_graceful_shutdown():
    settings = manifests()["ConfigMap"]["data"]
    pause = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = manifests()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(pause[1]) + float(settings["REPROKIT_SERVE_GRACEFUL_SECONDS"]) < grace


def image_environment() -> dict[str, str]:
    """The `REPROKIT_SERVE_*` settings the Containerfile's last stage sets, and its command."""
    text = (REPO / "Containerfile").read_text().split("\nFROM ")[-1]
    found = dict(re.findall(r"(REPROKIT_SERVE_\w+)=(\S+)", text))
    (command,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    return found | {"CMD": command}


def test_the_pod_spec_leaves_the_count_to_the_autoscaler_and_has_no_service_links():
    spec = manifests()["Deployment"]["spec"]
    assert "replicas" not in spec  # `kubectl apply` would reset what the autoscaler scaled to
    assert spec["template"]["spec"]["enableServiceLinks"] is False  # REPROKIT_SERVE_PORT=tcp://... otherwise
    assert {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"} in container()["env"]


def test_the_images_command_takes_its_settings_from_the_environment_and_the_configmap_wins(telco_package):
    """The image runs plain `reprokit serve` with its settings in the environment, so the pod's
    environment (the ConfigMap, then the Deployment's own) decides the model, host and port."""
    image = image_environment()
    assert yaml.safe_load(image.pop("CMD")) == ["reprokit", "serve"]
    assert image == {
        "REPROKIT_SERVE_MODEL": "/srv/model",
        "REPROKIT_SERVE_HOST": "0.0.0.0",
        "REPROKIT_SERVE_PORT": "8080",
    }
    data = manifests()["ConfigMap"]["data"]
    settings = parse_args([], environ=image | data | {"REPROKIT_SERVE_MODEL": str(telco_package)})
    assert (settings.model, settings.host, settings.port) == (str(telco_package), "0.0.0.0", 8080)


def test_the_configmap_sets_the_service(telco_package):
    """Every key is a setting `reprokit serve` reads, each value is taken: what the pod runs."""
    data = manifests()["ConfigMap"]["data"]
    settings = parse_args([], environ=data | {"REPROKIT_SERVE_MODEL": str(telco_package)})
    assert settings.workers == int(data["REPROKIT_SERVE_WORKERS"]) == 2
    assert settings.n_threads == int(data["REPROKIT_SERVE_THREADS"])
    assert settings.graceful_seconds == float(data["REPROKIT_SERVE_GRACEFUL_SECONDS"])
    assert settings.keep_alive_seconds == float(data["REPROKIT_SERVE_KEEP_ALIVE_SECONDS"])
    assert settings.max_wait_ms == float(data["REPROKIT_SERVE_MAX_WAIT_MS"])
    assert settings.access_log == data["REPROKIT_SERVE_ACCESS_LOG"]


def test_the_command_line_wins_over_the_environment(telco_package):
    environ = {"REPROKIT_SERVE_WORKERS": "2", "REPROKIT_SERVE_MODEL": "/nowhere"}
    settings = parse_args([str(telco_package), "--workers", "3"], environ=environ)
    assert (settings.model, settings.workers) == (str(telco_package), 3)
    assert parse_args([], environ={"REPROKIT_SERVE_MODEL": str(telco_package)}).model == str(telco_package)


def test_empty_values_are_unset_and_a_value_may_start_with_a_dash(telco_package):
    environ = {"REPROKIT_SERVE_MODEL": str(telco_package), "REPROKIT_SERVE_HOST": "", "REPROKIT_SERVE_WORKERS": ""}
    settings = parse_args([], environ=environ)
    assert (settings.host, settings.workers) == ("127.0.0.1", 1)  # the defaults, not all addresses
    assert parse_args([], environ={"REPROKIT_SERVE_PARAMS": "-params.yaml", **environ}).model == str(telco_package)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REPROKIT_SERVE_WORKERS", "two", "REPROKIT_SERVE_WORKERS='two': invalid int value"),
        ("REPROKIT_SERVE_ACCESS_LOG", "$(reboot)", "REPROKIT_SERVE_ACCESS_LOG='$(reboot)': invalid choice"),
        ("REPROKIT_SERVE_WORKRS", "2", "REPROKIT_SERVE_WORKRS: not a setting of reprokit serve"),
        ("REPROKIT_SERVE_PORT", "8080; rm -rf /", "REPROKIT_SERVE_PORT='8080; rm -rf /': invalid int value"),
        ("REPROKIT_SERVE_PORT", "tcp://10.96.0.12:80", "looks like a Kubernetes service link"),
        ("REPROKIT_SERVE_SERVICE_HOST", "10.96.0.12", "set `enableServiceLinks: false`"),
        ("REPROKIT_SERVE_GRACEFUL_SECONDS", "nan", "--graceful-seconds must be a finite number of at least 0"),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_error_naming_it(telco_package, variable, value, message):
    done = subprocess.run(
        [sys.executable, "-m", "reprokit.serving.serve", str(telco_package)],
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("usage: reprokit serve") and [line for line in lines if "error" in line] == lines[-1:]
