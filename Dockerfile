# modelserve images, one target per component, all from one build:
#   docker build --target sklearn      -t ghcr.io/modelserve/servers:0.1.0 .   (the default target)
#   docker build --target tensorflow   -t ghcr.io/modelserve/tensorflow:0.1.0 .
#   docker build --target transformers -t ghcr.io/modelserve/transformers:0.1.0 .
#   docker build --target gateway      -t ghcr.io/modelserve/gateway:0.1.0 .
# Any backend of the registry (servers/<name>/backend.py), with the extra it declares:
#   docker build --target backend      -t ghcr.io/modelserve/xgboost:0.1.0 . --build-arg BACKEND=xgboost
#   docker build --target backend      -t ghcr.io/modelserve/lightgbm:0.1.0 . --build-arg BACKEND=lightgbm
# The manifests in inferenceservices/ run `python -m servers.<backend>` in the servers image.
#   docker run -p 8080:8080 -v $PWD/models/iris:/mnt/models ghcr.io/modelserve/servers:0.1.0

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip uv
WORKDIR /src
# Dependencies first, so code changes don't reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p servers gateway && touch servers/__init__.py gateway/__init__.py \
 && /opt/venv/bin/uv pip install --python /opt/venv/bin/python . \
 && /opt/venv/bin/uv pip uninstall --python /opt/venv/bin/python modelserve
COPY servers ./servers
COPY gateway ./gateway
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps .

# The TensorFlow extra (~2.5 GB) only in the image that needs it.
FROM builder AS builder-tensorflow
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python '.[tensorflow]'

FROM python:3.11-slim-bookworm AS base
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Components listen on loopback unless told otherwise; in a pod their ports must be reachable.
ENV MODELSERVE_BIND_ADDRESS=0.0.0.0
RUN useradd --uid 1000 --create-home modelserve && mkdir -p /mnt/models \
 && chown modelserve /mnt/models
WORKDIR /app
EXPOSE 8080 8081

FROM base AS tensorflow
COPY --from=builder-tensorflow /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.tensorflow", "--model_dir", "/mnt/models"]

FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
USER 1000

FROM runtime AS transformers
CMD ["python", "-m", "servers.transformers.tabular", "--model_dir", "/mnt/models"]

FROM runtime AS gateway
# The components `modelserve up` starts here sit behind the gateway: loopback only.
ENV MODELSERVE_BIND_ADDRESS=127.0.0.1
COPY --chown=1000 inferenceservices /app/inferenceservices
# The services this image can run itself (no TensorFlow, no tritonserver here).
CMD ["modelserve", "up", "/app/inferenceservices/sklearn-iris.yaml", \
     "/app/inferenceservices/iris-classifier.yaml", "--host", "0.0.0.0", "--models-dir", "/mnt/models"]

# The registry names the backend's extra (`python -m servers.backends extra NAME`) and starts
# its entry point (`python -m servers.backends run`, by $MODELSERVE_BACKEND): a new backend
# needs no new target here.
FROM builder AS builder-backend
ARG BACKEND=sklearn
RUN EXTRA="$(/opt/venv/bin/python -m servers.backends extra "$BACKEND")" \
 && if [ -n "$EXTRA" ]; then \
      /opt/venv/bin/uv pip install --python /opt/venv/bin/python ".[$EXTRA]"; fi

FROM base AS backend
ARG BACKEND=sklearn
ENV MODELSERVE_BACKEND=$BACKEND
COPY --from=builder-backend /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.backends", "run"]

# Last, so a plain `docker build .` gives the predictor image the manifests name.
FROM runtime AS sklearn
CMD ["python", "-m", "servers.sklearn", "--model_dir", "/mnt/models"]
