"""Model versions on the v2 routes: the one place REST and gRPC ask which versions a model serves.

KServe's data plane knows no versions: its versioned REST routes answer 501 (with a traceback
logged each time), its gRPC servicer ignores `version`, and its metadata lists none. Here a
versioned call names a version the model serves (`ServedModel.versions`) or is answered 404 /
NOT_FOUND with the versions it does serve; metadata lists them.
"""

from __future__ import annotations

from typing import Any

from kserve.protocol.dataplane import DataPlane

from servers.errors import ModelNotFound
from servers.model import SINGLE_VERSION

__all__ = ["check_version", "model_metadata", "model_ready", "model_statistics"]


def check_version(dataplane: DataPlane, name: str, version: str | None) -> tuple[str, ...]:
    """The versions model `name` serves; ModelNotFound if there is no such model or `version`
    (None or "" for the unversioned routes) is not one of them."""
    model = dataplane.model_registry.get_model(name)
    if model is None:
        raise ModelNotFound(f"model '{name}' not found on this server")
    # A kserve.Model that is not one of ours has no versions of its own.
    versions = tuple(getattr(model, "versions", SINGLE_VERSION))
    if version and version not in versions:
        raise ModelNotFound(
            f"model '{name}' has no version '{version}'; it serves {list(versions)}"
        )
    return versions


async def model_metadata(dataplane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    """KServe's v2 metadata for the model, with the versions it serves."""
    versions = check_version(dataplane, name, version)
    metadata = await dataplane.model_metadata(name)
    return {**metadata, "versions": list(versions)}


async def model_ready(dataplane: DataPlane, name: str, version: str | None) -> bool:
    """Whether the model (at `version`, when given) is ready."""
    check_version(dataplane, name, version)
    return bool(await dataplane.model_ready(name))



def model_statistics(dataplane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    """The statistics extension's answer (`{"model_stats": [...]}`, Triton's schema) for model
    `name` at `version`, or for every model when `name` is empty (as Triton answers)."""
    if name:
        versions = check_version(dataplane, name, version)
        models = {name: dataplane.model_registry.get_model(name)}
    else:
        models = dict(dataplane.model_registry.get_models())
        versions = ()
    stats = []
    for model_name, model in sorted(models.items()):
        counters = getattr(model, "statistics", None)
        if counters is None:
            continue  # a kserve.Model that is not one of ours counts nothing
        served = versions or tuple(getattr(model, "versions", SINGLE_VERSION))
        stats.append(counters.document(model_name, version or served[-1]))
    return {"model_stats": stats}
