"""The LightGBM backend's registry entry: KServe's `kserve-lgbserver`."""

from servers.backends import ArtifactFormat, Backend, SupportedFormat

BACKEND = Backend(
    name="lightgbm",
    runtime="kserve-lgbserver",
    entry_point="servers.lightgbm",
    # KServe's priority for its lgbserver.
    formats=(SupportedFormat("lightgbm", ("3", "4"), priority=3),),
    args=("--model_name={name}", "--model_dir=/mnt/models", "--nthread=1"),
    artifacts=(
        ArtifactFormat("model.txt", "LightGBM text model (Booster.save_model)"),
    ),
    extra="lightgbm",
)
