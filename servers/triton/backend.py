"""The Triton backend's registry entry: KServe's `kserve-tritonserver`, played by the real
`tritonserver` of the `nvidia-pytriton` wheel on CPU (`.venv-triton`; GPU resources in a
manifest are ignored here). Its args name no model: Triton serves the repository's names."""

from servers.backends import MOUNT_PATH, Backend, SupportedFormat

BACKEND = Backend(
    name="triton",
    runtime="kserve-tritonserver",
    entry_point="servers.triton.tritonserver",
    extra="triton-client",
    formats=(
        SupportedFormat("tensorrt", ("8",)),
        SupportedFormat("tensorflow", ("1", "2")),
        SupportedFormat("onnx", ("1",)),
        SupportedFormat("pytorch", ("1",), auto_select=False),
        SupportedFormat("triton", ("2",)),
    ),
    # `tritonserver --model-store=/mnt/models`, in our flags.
    args=(f"--model_dir={MOUNT_PATH}",),
    protocol_versions=("v2", "grpc-v2"),
    # TritonPredictor, a kserve.Model in front of a Triton server.
    more_entry_points=("servers.triton",),
)
