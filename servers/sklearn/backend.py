"""The sklearn backend's registry entry: KServe's `kserve-sklearnserver`."""

from servers.backends import ArtifactFormat, Backend, SupportedFormat

BACKEND = Backend(
    name="sklearn",
    runtime="kserve-sklearnserver",
    entry_point="servers.sklearn",
    extra="sklearn",
    formats=(SupportedFormat("sklearn", ("1",), priority=1),),
    artifacts=(
        ArtifactFormat(".skops", "skops (loads only allowed types)"),
        ArtifactFormat(".joblib", "joblib pickle", runs_code=True),
        ArtifactFormat(".pkl", "pickle", runs_code=True),
        ArtifactFormat(".pickle", "pickle", runs_code=True),
    ),
)
