"""What a component's traces are called, and which OTEL_* a manifest may set.

Tracing is the operator's: a component inherits the OTEL_* variables `modelserve up` was
started with (the collector's endpoint, its headers, the sampler...; `servers/telemetry.py`
reads them), as every pod of a cluster gets its collector from the platform. The control plane
adds who the component is, in the standard variables the SDK reads: `OTEL_SERVICE_NAME`
(`<isvc>-<component>`, as KServe names the component's Knative service) and
`OTEL_RESOURCE_ATTRIBUTES` (`service.namespace`, `service.instance.id` = revision and replica,
and the revision, component and InferenceService by name), so that one trace shows which
revision of which component answered.

A manifest may name its component (`OTEL_SERVICE_NAME`) and add resource attributes
(`OTEL_RESOURCE_ATTRIBUTES`; the platform's facts win over the same keys). Any other OTEL_*
from a manifest is refused by the launch policy, as the variables that change which code runs
are, unless `up --allow-custom-containers`: those variables pick where spans are sent (an
endpoint and its headers: a component made to POST to any URL, past the storage policy's "no
network by default"), which entry points the SDK loads (`OTEL_PYTHON_*`,
`OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`, `OTEL_PROPAGATORS`), and which files it reads
(certificates).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

from gateway.controlplane.policy import LaunchPolicy, PolicyRefused

__all__ = ["MANIFEST_OTEL_ENV", "check_otel_env", "component_tracing_env"]

SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
RESOURCE_ENV = "OTEL_RESOURCE_ATTRIBUTES"
# The OTEL_* a manifest may set: the component's identity, nothing about where spans go.
MANIFEST_OTEL_ENV = frozenset({SERVICE_NAME_ENV, RESOURCE_ENV})


def check_otel_env(names: Iterable[str], policy: LaunchPolicy, where: str) -> None:
    """Refuse a manifest's OTEL_* other than the identity ones (module docstring)."""
    if policy.allow_custom_containers:
        return
    bad = sorted(
        n for n in names if n.upper().startswith("OTEL_") and n.upper() not in MANIFEST_OTEL_ENV
    )
    if bad:
        raise PolicyRefused(
            f"{where}: environment variable(s) {', '.join(bad)} are refused by the launch "
            "policy: where traces go is the platform's (the OTEL_* variables `modelserve up` "
            "is started with reach every component); a manifest may set only "
            f"{' and '.join(sorted(MANIFEST_OTEL_ENV))}, or run with `--allow-custom-containers`"
        )


def _attributes(text: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES' `key=value,...` (values percent-encoded, W3C Baggage style)."""
    found: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            found[key.strip()] = unquote(value.strip())
    return found


def component_tracing_env(
    service: str,
    namespace: str,
    component: str,
    revision: str,
    replica: int,
    manifest_env: Mapping[str, str],
) -> dict[str, str]:
    """`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` of one component's process: the
    manifest's name if it gives one, else `<service>-<component>`; the inherited and the
    manifest's attributes, with the platform's facts over them."""
    attributes = {
        **_attributes(os.environ.get(RESOURCE_ENV, "")),
        **_attributes(manifest_env.get(RESOURCE_ENV, "")),
        "service.namespace": namespace,
        "service.instance.id": f"{revision}-{replica}",
        "modelserve.inferenceservice": service,
        "modelserve.component": component,
        "modelserve.revision": revision,
    }
    return {
        SERVICE_NAME_ENV: manifest_env.get(SERVICE_NAME_ENV) or f"{service}-{component}",
        RESOURCE_ENV: ",".join(f"{k}={quote(v, safe='')}" for k, v in attributes.items()),
    }
