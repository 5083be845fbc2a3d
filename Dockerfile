# One image for every modelserve component: `python -m servers.<backend>` (what the
# InferenceService manifests run) and the `modelserve` CLI/gateway.
#   docker build -t ghcr.io/modelserve/servers:0.1.0 .
#   docker run -p 8080:8080 -v $PWD/models/iris:/mnt/models ghcr.io/modelserve/servers:0.1.0 \
#       python -m servers.sklearn --model_name sklearn-iris --model_dir /mnt/models

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
COPY inferenceservices ./inferenceservices
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/inferenceservices /app/inferenceservices
RUN useradd --uid 1000 --create-home modelserve && mkdir -p /mnt/models \
 && chown modelserve /mnt/models
USER 1000
WORKDIR /app
EXPOSE 8080 8081
CMD ["python", "-m", "servers.sklearn", "--model_dir", "/mnt/models"]
