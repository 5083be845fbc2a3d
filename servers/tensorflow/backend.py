"""The TensorFlow backend's registry entry: it plays KServe's `kserve-tensorflow-serving`
(`tensorflow_model_server`: TF Serving's REST predict API and gRPC PredictionService), on the
same paths and v2 besides."""

from servers.backends import Backend, SupportedFormat

BACKEND = Backend(
    name="tensorflow",
    runtime="kserve-tensorflow-serving",
    entry_point="servers.tensorflow",
    # KServe ranks TF Serving (2) above Triton (1) for the tensorflow format.
    formats=(SupportedFormat("tensorflow", ("1", "2"), priority=2),),
    protocol_versions=("v1", "grpc-v1", "v2"),
    extra="tensorflow",
)
