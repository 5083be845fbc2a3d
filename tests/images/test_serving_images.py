"""Each image `make images` builds, run as a cluster would run it: the manifest's command and
flags, a read-only root filesystem, the image's own user (uid 1000), only 127.0.0.1 ports; each
test checks the answers against the model itself, the uid, that nothing can be written outside
the writable mounts, and that SIGTERM stops the container inside its grace period (the
kubelet's SIGKILL after it would exit 137)."""

from __future__ import annotations

import json
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from tests.images.conftest import container_of, with_ports
from tests.images.containers import Container, Runtime, run_container
from tests.support import ROOT

pytestmark = pytest.mark.e2e
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
RECORDS = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]  # ROWS as named features
GRACE_S = 30  # the kubelet's default terminationGracePeriodSeconds
UID = "1000"
GATEWAY_SERVICE = ROOT / "deploy" / "gateway" / "knative-service.yaml"


def expected_labels(models_dir: Path) -> list[int]:
    """What the iris model itself predicts for ROWS."""
    model = joblib.load(models_dir / "iris" / "model.joblib")
    return [int(label) for label in model.predict(np.array(ROWS))]


def check_hardened(container: Container) -> None:
    """The process runs as uid 1000 and the root filesystem refuses writes."""
    assert container.exec("id", "-u").strip() == UID
    status = container.exec("cat", "/proc/1/status")
    assert f"Uid:\t{UID}\t" in status, status
    write = container.runtime.command("exec", container.name, "touch", "/opt/venv/written")
    refused = subprocess.run(write, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused


def check_stops_on_sigterm(container: Container) -> None:
    code = container.stop(GRACE_S)
    assert code != 137, f"still running {GRACE_S} s after SIGTERM:\n{container.logs()[-3000:]}"


def manifest_command(manifest: dict[str, Any], component: str) -> list[str]:
    container = container_of(manifest, component)
    return [*container.get("command", []), *container.get("args", [])]


def run_component(
    runtime: Runtime, manifest: dict[str, Any], component: str, model: Path, **options: Any
) -> AbstractContextManager[Container]:
    """`component` of an InferenceService as its manifest runs it: its image, command and
    flags, `model` at /mnt/models (`options` go to run_container)."""
    image = container_of(manifest, component)["image"]
    return run_container(runtime, image, manifest_command(manifest, component),
                         mounts=[(model, "/mnt/models")], **options)


def test_servers_image_serves_sklearn_iris_over_v1_and_v2(
    runtime: Runtime, images: dict[str, str], manifests: dict[str, Any], models_dir: Path
) -> None:
    manifest = manifests["sklearn-iris"]
    assert container_of(manifest, "predictor")["image"] == images["sklearn"]
    with run_component(runtime, manifest, "predictor", models_dir / "iris") as container:
        container.wait_ready("/v2/models/sklearn-iris/ready")
        v1 = httpx.post(container.url() + "/v1/models/sklearn-iris:predict",
                        json={"instances": ROWS}, timeout=30)
        assert v1.status_code == 200, v1.text
        assert v1.json()["predictions"] == expected_labels(models_dir)
        v2 = httpx.post(
            container.url() + "/v2/models/sklearn-iris/infer",
            json={"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                              "data": [x for row in ROWS for x in row]}]},
            timeout=30,
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == expected_labels(models_dir)
        bad = httpx.post(container.url() + "/v1/models/sklearn-iris:predict",
                         json={"instances": [[1.0, 2.0]]}, timeout=30)
        assert bad.status_code == 400, bad.text  # a clear error, and it keeps serving
        check_hardened(container)
        check_stops_on_sigterm(container)


def test_transformers_image_fronts_the_predictor_as_iris_classifier(
    runtime: Runtime, images: dict[str, str], manifests: dict[str, Any], models_dir: Path
) -> None:
    manifest = manifests["iris-classifier"]
    # The transformer's own manifest command and flags, in the transformers image; in the
    # predictor's network namespace (KServe passes --predictor_host; here it is loopback).
    transformer = [*with_ports(manifest_command(manifest, "transformer"), 9080, 9081),
                   "--predictor_host=127.0.0.1:8080"]
    model = models_dir / "iris"
    with run_component(runtime, manifest, "predictor", model, ports=(8080, 9080)) as backend:
        backend.wait_ready("/v2/models/iris-classifier/ready")
        with run_container(runtime, images["transformers"], transformer,
                           mounts=[(model, "/mnt/models")], network_of=backend) as front:
            front.wait_ready("/v2/health/ready", port=9080)
            answer = httpx.post(front.url(9080) + "/v1/models/iris-classifier:predict",
                                json={"instances": RECORDS}, timeout=30)
            assert answer.status_code == 200, answer.text
            names = json.loads((models_dir / "iris" / "metadata.json").read_text())
            labels = [names["target_names"][i] for i in expected_labels(models_dir)]
            assert answer.json()["predictions"] == labels
            missing = httpx.post(front.url(9080) + "/v1/models/iris-classifier:predict",
                                 json={"instances": [{"sepal_length": 1.0}]}, timeout=30)
            assert missing.status_code == 400, missing.text
            check_hardened(front)
            check_stops_on_sigterm(front)
        check_stops_on_sigterm(backend)


def test_gateway_image_runs_modelserve_up_with_its_two_services(
    runtime: Runtime, images: dict[str, str], models_dir: Path
) -> None:
    """The Knative Service of deploy/gateway as it is: its command and flags, its API key
    variable, its emptyDir mounts as tmpfs (the root filesystem is read-only there too)."""
    (service,) = [d for d in yaml.safe_load_all(GATEWAY_SERVICE.read_text()) if d]
    pod = service["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    assert spec["image"] == images["gateway"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    tmpfs = [m["mountPath"] for m in spec["volumeMounts"] if m["name"] in empty_dirs]
    key = "image-test-key"
    with run_container(
        runtime, spec["image"], [*spec["command"], *spec["args"]],
        mounts=[(models_dir, "/mnt/models")], tmpfs=tmpfs,
        env={"MODELSERVE_GATEWAY_API_KEYS": key},
    ) as container:
        container.wait_ready("/v2/health/ready")
        headers = {"x-api-key": key}
        direct = httpx.post(container.url() + "/v1/models/sklearn-iris:predict",
                            json={"instances": ROWS}, headers=headers, timeout=30)
        assert direct.status_code == 200, direct.text
        assert direct.json()["predictions"] == expected_labels(models_dir)
        fronted = httpx.post(container.url() + "/v1/models/iris-classifier:predict",
                             json={"instances": RECORDS}, headers=headers, timeout=30)
        assert fronted.status_code == 200, fronted.text
        assert len(fronted.json()["predictions"]) == len(ROWS)
        anonymous = httpx.post(container.url() + "/v1/models/sklearn-iris:predict",
                               json={"instances": ROWS}, timeout=30)
        assert anonymous.status_code == 401, anonymous.text
        check_hardened(container)
        check_stops_on_sigterm(container)


def test_tensorflow_image_serves_tf_digits(
    runtime: Runtime, images: dict[str, str], manifests: dict[str, Any], models_dir: Path
) -> None:
    manifest = manifests["tf-digits"]
    assert container_of(manifest, "predictor")["image"] == images["tensorflow"]
    digits = load_digits()
    with run_component(runtime, manifest, "predictor", models_dir / "digits-tf") as container:
        container.wait_ready("/v2/models/tf-digits/ready")
        answer = httpx.post(container.url() + "/v1/models/tf-digits:predict",
                            json={"instances": digits.images[:8].tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        found = [p["digit"] for p in answer.json()["predictions"]]
        assert found == digits.target[:8].tolist()
        check_hardened(container)
        check_stops_on_sigterm(container)
