"""Triton backend: a real `tritonserver` run by our code, and a predictor in front of it.

- `install` finds the `tritonserver` shipped in the `nvidia-pytriton` wheel (its own venv,
  `.venv-triton`, since the wheel pins numpy<2) and builds the environment it runs in;
- `tritonserver` starts, watches and stops it (`python -m servers.triton.tritonserver` is the
  component `modelserve up` runs for the `kserve-tritonserver` runtime);
- `repository` checks and writes Triton model repositories, `demo` builds the digits one;
- `model` is `TritonPredictor`, a kserve.Model forwarding v1/v2 requests to Triton over gRPC
  or HTTP (`python -m servers.triton`).
"""
