# syntax=docker/dockerfile:1
# The generator image (also the evaluator's): vLLM on CUDA plus selfemo[gpu].
# Children run `python -m selfemo.generator rollout|evaluate …` as UID 1000 with
# a read-only root filesystem and emptyDirs at /tmp, /home/selfemo, /dev/shm.
# Build from the repository root:  docker build -f images/generator.Dockerfile -t selfemo/generator .
# Base images are pinned by version; a release build pins digests too
# (--build-arg VLLM_IMAGE=vllm/vllm-openai:v0.33.0@sha256:<digest>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0

# ---- wheel: selfemo as a wheel, built without touching the CUDA base.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY selfemo/ selfemo/
COPY operator/ operator/
COPY generator/ generator/
COPY trainer/ trainer/
COPY images/requirements.py images/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python images/requirements.py generator > /wheels/requirements.txt

# ---- run: the vLLM base (CUDA, torch, vllm) + selfemo and its GPU extra.
FROM ${VLLM_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
# The core dependencies + the gpu extra less DeepSpeed (images/requirements.py);
# vllm and torch are already in the base, so pip keeps them.
RUN python3 -m pip install -r /wheels/requirements.txt \
    && python3 -m pip install --no-deps /wheels/selfemo-*.whl \
    && rm -rf /wheels \
    && { command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; } \
    && { getent passwd 1000 >/dev/null || useradd --no-log-init --uid 1000 --user-group --no-create-home \
            --home-dir /home/selfemo --shell /usr/sbin/nologin selfemo; }
ENV HOME=/home/selfemo \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    SELFEMO_METRICS_PORT=9400
WORKDIR /home/selfemo
USER 1000:1000
EXPOSE 9400
# No HEALTHCHECK: the process only serves /healthz when started with
# --metrics-port (the generator Deployment's probes use it); the evaluator Job has none.
ENTRYPOINT []
CMD ["python", "-m", "selfemo.generator", "--help"]
