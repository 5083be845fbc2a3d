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

# (global) What uvicorn imports only when it starts serving.
ARG SERVING_MODULES="uvicorn.protocols.http.httptools_impl uvicorn.protocols.websockets.websockets_impl uvicorn.lifespan.on uvicorn.loops.uvloop"

# Each image's /opt/venv is built apart (tools/image-venv.sh): only the extras its components
# need, dependencies in a layer of their own, no installer, caches or test suites, and the
# bytecode of what its entry points import compiled once.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils: `strip` for the extension modules' debug symbols (tools/image-venv.sh).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/uv && /opt/uv/bin/pip install -q uv
WORKDIR /src
COPY tools/image-venv.sh /usr/local/bin/image-venv
# README.md is pyproject's readme: an empty one here, so that README edits rebuild no venv.
COPY pyproject.toml ./
RUN touch README.md

# The code, apart, so that each venv's dependency layer is built before it is looked at.
FROM scratch AS code
COPY servers /src/servers
COPY gateway /src/gateway
COPY README.md /src/README.md

FROM builder AS venv-sklearn
ARG SERVING_MODULES
RUN image-venv deps sklearn pillow cryptography tzdata
COPY --from=code /src ./
RUN image-venv code servers.sklearn.__main__ $SERVING_MODULES

FROM builder AS venv-transformers
ARG SERVING_MODULES
RUN image-venv deps triton-client cryptography tzdata
COPY --from=code /src ./
RUN image-venv code servers.transformers.tabular.__main__ servers.transformers.image.__main__ \
    tritonclient.http.aio $SERVING_MODULES

# `modelserve up` and the components of the services it runs here (sklearn-iris,
# iris-classifier), in one image.
FROM builder AS venv-gateway
ARG SERVING_MODULES
RUN image-venv deps sklearn pillow tzdata
COPY --from=code /src ./
RUN image-venv code gateway.cli.main gateway.controlplane.platform gateway.dataplane.app \
    servers.sklearn.__main__ servers.transformers.tabular.__main__ $SERVING_MODULES

# The TensorFlow extra (~2.5 GB) only in the image that needs it.
FROM builder AS venv-tensorflow
ARG SERVING_MODULES
RUN image-venv deps tensorflow cryptography
COPY --from=code /src ./
RUN image-venv code servers.tensorflow.__main__ $SERVING_MODULES

FROM python:3.11-slim-bookworm AS base
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Components listen on loopback unless told otherwise; in a pod their ports must be reachable.
ENV MODELSERVE_BIND_ADDRESS=0.0.0.0
RUN useradd --uid 1000 --create-home modelserve && mkdir -p /mnt/models \
 && chown modelserve /mnt/models
WORKDIR /app
EXPOSE 8080 8081

FROM base AS tensorflow
COPY --from=venv-tensorflow /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.tensorflow", "--model_dir", "/mnt/models"]

FROM base AS transformers
COPY --from=venv-transformers /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.transformers.tabular", "--model_dir", "/mnt/models"]

FROM base AS gateway
COPY --from=venv-gateway /opt/venv /opt/venv
# The components `modelserve up` starts here sit behind the gateway: loopback only.
ENV MODELSERVE_BIND_ADDRESS=127.0.0.1
COPY --chown=1000 inferenceservices /app/inferenceservices
USER 1000
# The services this image can run itself (no TensorFlow, no tritonserver here).
CMD ["modelserve", "up", "/app/inferenceservices/sklearn-iris.yaml", \
     "/app/inferenceservices/iris-classifier.yaml", "--host", "0.0.0.0", "--models-dir", "/mnt/models"]

# The registry names the backend's extra (`python -m servers.backends extra NAME`) and starts
# its entry point (`python -m servers.backends run`, by $MODELSERVE_BACKEND): a new backend
# needs no new target here.
FROM builder AS venv-backend
ARG BACKEND=sklearn
ARG SERVING_MODULES
COPY --from=code /src /tmp/code
RUN image-venv deps "$(PYTHONPATH=/tmp/code python -m servers.backends extra "$BACKEND")"
COPY --from=code /src ./
RUN image-venv code servers.backends $SERVING_MODULES

FROM base AS backend
ARG BACKEND=sklearn
ENV MODELSERVE_BACKEND=$BACKEND
COPY --from=venv-backend /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.backends", "run"]

# Last, so a plain `docker build .` gives the predictor image the manifests name.
FROM base AS sklearn
COPY --from=venv-sklearn /opt/venv /opt/venv
USER 1000
CMD ["python", "-m", "servers.sklearn", "--model_dir", "/mnt/models"]
