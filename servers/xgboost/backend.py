"""The XGBoost backend's registry entry: KServe's `kserve-xgbserver`."""

from servers.backends import ArtifactFormat, Backend, SupportedFormat

BACKEND = Backend(
    name="xgboost",
    runtime="kserve-xgbserver",
    entry_point="servers.xgboost",
    # KServe's runtime lists version 1; boosters saved by XGBoost 2 and 3 load the same way.
    formats=(SupportedFormat("xgboost", ("1", "2", "3"), priority=1),),
    # The ServingRuntime's `--nthread=1`: one core per replica, replicas scale out.
    args=("--model_name={name}", "--model_dir=/mnt/models", "--nthread=1"),
    artifacts=(
        ArtifactFormat(".json", "XGBoost JSON model (Booster.save_model)"),
        ArtifactFormat(".ubj", "XGBoost UBJSON model (Booster.save_model)"),
    ),
    extra="xgboost",
)
