"""Session fixtures: demo models trained into a temp dir, real servers on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.kserve_argv import argv_hidden

with argv_hidden():  # pytest's flags (--co, --timeout) are prefixes of kserve's
    import kserve  # noqa: F401

from demos import build_all  # noqa: E402
from tests.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support import ServerProcess, run_server

# What makes a test slow: a process it starts (a component, `modelserve up`, tritonserver,
# kube-apiserver, a browser, a container) or the demo models it trains. `make test-fast`
# leaves these out.
_SLOW_DIRS = ("e2e", "security", "images")
_SLOW_FIXTURES = frozenset({
    "models_root", "iris_dir", "digits_tf_dir", "sklearn_server", "tabular_server",
    "tf_server", "triton_install", "triton_repository", "platform", "xgboost_server",
    "lightgbm_server", "tabular_predictor",
})
_SLOW_CALLS = ("run_server(", "run_platform(", "subprocess.", "build_all(", "TritonServer(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that starts a process or trains the demo models (by its
    folder, its fixtures, or what its module calls), so `-m "not slow"` is the inner loop."""
    module_is_slow: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.path))
        if path not in module_is_slow:
            source = path.read_text(encoding="utf-8", errors="replace")
            module_is_slow[path] = any(d in path.parts for d in _SLOW_DIRS) or any(
                call in source for call in _SLOW_CALLS
            )
        fixtures = set(getattr(item, "fixturenames", ()))
        if module_is_slow[path] or fixtures & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP trace receiver on a free port (tests/otlp_receiver.py): point
    OTEL_EXPORTER_OTLP_ENDPOINT at its `endpoint`, read its spans with `wait_for`."""
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_all(root)
    return root


@pytest.fixture(scope="session")
def iris_dir(models_root: Path) -> Path:
    return models_root / "iris"


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def sklearn_server(iris_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}", "--max_body_bytes=1048576"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


@pytest.fixture(scope="session")
def xgboost_server(models_root: Path, logs: Path) -> Iterator[ServerProcess]:
    args = ["--model_name=xgboost-iris", f"--model_dir={models_root / 'xgboost-iris'}",
            "--max_body_bytes=1048576"]
    with run_server("servers.xgboost", args, logs) as server:
        yield server


@pytest.fixture(scope="session")
def lightgbm_server(models_root: Path, logs: Path) -> Iterator[ServerProcess]:
    args = ["--model_name=lightgbm-iris", f"--model_dir={models_root / 'lightgbm-iris'}",
            "--max_body_bytes=1048576"]
    with run_server("servers.lightgbm", args, logs) as server:
        yield server


@pytest.fixture(params=["sklearn-iris", "xgboost-iris", "lightgbm-iris"])
def tabular_predictor(
    request: pytest.FixtureRequest,
) -> tuple[ServerProcess, str]:
    """Each tabular predictor on its iris model (scikit-learn, XGBoost, LightGBM), with the
    model's name: the same client mistakes get the same answers from all three."""
    fixture = {"sklearn-iris": "sklearn_server", "xgboost-iris": "xgboost_server",
               "lightgbm-iris": "lightgbm_server"}[request.param]
    return request.getfixturevalue(fixture), request.param


@pytest.fixture(scope="session")
def tabular_server(
    sklearn_server: ServerProcess, iris_dir: Path, logs: Path
) -> Iterator[ServerProcess]:
    # The transformer and the predictor share the service's model name, as in KServe.
    args = [
        "--model_name=sklearn-iris",
        f"--model_dir={iris_dir}",
        f"--predictor_host={sklearn_server.grpc_target}",
        "--predictor_protocol=grpc-v2",
    ]
    with run_server("servers.transformers.tabular", args, logs) as server:
        yield server


@pytest.fixture(scope="session")
def digits_tf_dir(models_root: Path) -> Path:
    """The Keras digits SavedModel (TF Serving layout: digits-tf/1/) and its metadata.json."""
    directory = models_root / "digits-tf"
    if not (directory / "1" / "saved_model.pb").is_file():
        pytest.fail("the digits SavedModel was not built: is the tensorflow extra installed?")
    return directory


@pytest.fixture(scope="session")
def tf_server(digits_tf_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    """`python -m servers.tensorflow` serving the digits SavedModel as `tf-digits`."""
    args = ["--model_name=tf-digits", f"--model_dir={digits_tf_dir}", "--max_body_bytes=1048576"]
    with run_server("servers.tensorflow", args, logs) as server:
        yield server


@pytest.fixture(scope="session")
def triton_install() -> Any:
    """The Triton of `.venv-triton` (or $MODELSERVE_TRITON_HOME): missing is a failure, not a
    skip (`make install` creates it)."""
    from servers.triton.install import TritonNotInstalled, locate

    try:
        return locate()
    except TritonNotInstalled as exc:
        pytest.fail(f"the Triton tests need the Triton venv: {exc}")


@pytest.fixture(scope="session")
def triton_repository(models_root: Path) -> Path:
    """`models/triton/`, the CPU repository `build_all` writes (digits ONNX and iris)."""
    from demos.triton import DIGITS_MODEL, IRIS_MODEL, TRITON_REPOSITORY

    repository = models_root / TRITON_REPOSITORY
    for model in (DIGITS_MODEL, IRIS_MODEL):
        if not (repository / model / "config.pbtxt").is_file():
            pytest.fail(f"{repository} lacks {model}: are the tensorflow and triton extras "
                        "installed?")
    return repository
