# syntax=docker/dockerfile:1
# The trainer image: CUDA + PyTorch (devel: DeepSpeed JIT-compiles its fused
# ops with nvcc on first use) + DeepSpeed + selfemo[gpu].
# Children run `python -m selfemo.trainer …` or `torchrun … -m selfemo.trainer …`
# as UID 1000 with a read-only root filesystem; the JIT cache goes to the
# /home/selfemo emptyDir (TORCH_EXTENSIONS_DIR below).
# Build from the repository root:  docker build -f images/trainer.Dockerfile -t selfemo/trainer .
# Base images are pinned by version; a release build pins digests too
# (--build-arg TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel@sha256:<digest>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel

# ---- wheel: selfemo as a wheel.
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
    && python images/requirements.py trainer > /wheels/requirements.txt

# ---- run: the CUDA PyTorch base + DeepSpeed (pinned by the gpu extra) + selfemo.
FROM ${TORCH_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
# DeepSpeed is an sdist that imports torch at build time: no build isolation,
# and no ops built here (they are JIT-built on the GPU node).
RUN DS_BUILD_OPS=0 python -m pip install --no-build-isolation -r /wheels/requirements.txt \
    && python -m pip install --no-deps /wheels/selfemo-*.whl \
    && rm -rf /wheels \
    && { getent passwd 1000 >/dev/null || useradd --no-log-init --uid 1000 --user-group --no-create-home \
            --home-dir /home/selfemo --shell /usr/sbin/nologin selfemo; }
ENV HOME=/home/selfemo \
    TORCH_EXTENSIONS_DIR=/home/selfemo/.cache/torch_extensions \
    TRITON_CACHE_DIR=/home/selfemo/.cache/triton \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /home/selfemo
USER 1000:1000
EXPOSE 29500
# No HEALTHCHECK: a training Job runs to completion; Kubernetes judges it by its exit code.
CMD ["python", "-m", "selfemo.trainer", "--help"]
