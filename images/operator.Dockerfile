# syntax=docker/dockerfile:1
# The operator image: `python -m selfemo.operator`, slim Python, no ML libraries
# (`pip install .[operator]`: kopf, kubernetes, pydantic, boto3, prometheus-client).
# Build from the repository root:  docker build -f images/operator.Dockerfile -t selfemo/operator .
# Base images are pinned by version; a release build pins digests too:
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a venv with selfemo and the operator's dependencies, at the versions CI tests.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/cpu-constraints.txt requirements/
COPY selfemo/ selfemo/
COPY operator/ operator/
COPY generator/ generator/
COPY trainer/ trainer/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[operator]" -c requirements/cpu-constraints.txt

# ---- run: the venv on a clean base, a non-root numeric user, nothing else.
FROM ${PYTHON_IMAGE}
RUN useradd --system --no-log-init --uid 10001 --user-group --no-create-home \
        --home-dir /tmp --shell /usr/sbin/nologin selfemo
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the chart: no .pyc writes, HOME on the /tmp emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SELFEMO_OPERATOR_METRICS_PORT=8080
USER 10001:10001
EXPOSE 8080
# /healthz is 200 once kopf has started (Kubernetes uses the chart's probes instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['SELFEMO_OPERATOR_METRICS_PORT'], timeout=3)"]
ENTRYPOINT ["python", "-m", "selfemo.operator"]
