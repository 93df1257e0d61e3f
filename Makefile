# The two quick-start commands: `make demo` and `make test`. Both install what they need first.
# Python: everything goes into the project's own virtual environment .venv/ (never the system Python, which
# Debian 12 refuses: PEP 668), made from $(PYTHON) (3.11+; e.g. make PYTHON=python3.12). Its bin/ comes first on
# PATH for every command run here, so the tests and the job find the aws CLI installed there.
# Go: e2e/install-tools.sh uses a Go >= 1.24 if there is one, else bootstraps the pinned one (e2e/versions.env).
PYTHON ?= python3
VENV   ?= .venv
MODELSYNC_CACHE ?= $(HOME)/.cache/modelsync
PYTEST_ARGS ?=
# bench: more arguments for python -m bench (e.g. --shaped 800mbit, --files 8 --size 128Mi, --repeat 3)
BENCH_ARGS ?=
# e2e-upstream: more arguments for e2e/upstream_suite.py (e.g. --keep, --state-dir DIR, -- -k update_artifact)
UPSTREAM_SUITE_ARGS ?=
# what ruff checks (mypy checks what pyproject.toml's [tool.mypy] files names: modelsync/)
RUFF_PATHS ?= modelsync tests e2e bench
BASE_TOOLS := apt oras registry minio model-registry awscli
VPY       := $(abspath $(VENV))/bin/python
INSTALLED := $(VENV)/.modelsync-installed
GO_VERSION := $(shell sed -n 's/^GO_VERSION=//p' e2e/versions.env)
export PATH := $(abspath $(VENV))/bin:$(HOME)/go/bin:$(MODELSYNC_CACHE)/go-$(GO_VERSION)/bin:/usr/local/go/bin:$(PATH)
export MODELSYNC_CACHE

.PHONY: venv install lint tools tools-base test demo bench image image-smoke stack-up stack-down e2e-local e2e-upstream cluster-up cluster-down clean

venv:               ## .venv/ from $(PYTHON) (installs python3-venv on Debian/Ubuntu when missing, as root)
	@bash e2e/venv.sh '$(PYTHON)' '$(VENV)'

install: venv       ## the package with its test extras, editable, into .venv/ (again only when pyproject.toml changes)
	@if [ ! -e $(INSTALLED) ] || [ pyproject.toml -nt $(INSTALLED) ]; then \
	  echo "$(VPY) -m pip install -e '.[test]'" && \
	  $(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test]' && touch $(INSTALLED); fi

lint: install       ## mypy --strict and ruff, pinned by the test extra, with pyproject.toml's settings
	$(abspath $(VENV))/bin/mypy
	$(abspath $(VENV))/bin/ruff check $(RUFF_PATHS)

tools: venv         ## the binaries the job drives and the local stack's servers (idempotent, pinned)
	PYTHON='$(VPY)' bash e2e/install-tools.sh

tools-base: venv    ## only what the job and the base stack need (no sigstore servers, no Kubernetes, no Toxiproxy)
	PYTHON='$(VPY)' bash e2e/install-tools.sh $(BASE_TOOLS)

test: install tools ## every test, on the real local stack (PYTEST_ARGS='-m "not slow"' and the like pass through)
	$(VPY) -m pytest -q -ra $(PYTEST_ARGS)

demo: install tools-base ## a real end-to-end sync on the local stack: S3 (MinIO) -> OCI modelcar, create_model
	$(VPY) -m e2e.demo

bench: install tools-base ## throughput figures on the local stack (not part of make test)
	$(VPY) -m bench $(BENCH_ARGS)
	$(VPY) -m bench.scan

image:              ## the job image localhost/modelsync:dev with podman (bases made locally; see e2e/image.sh)
	bash e2e/image.sh

image-smoke: image install ## run that image as a Kubernetes Job would (uid 1001, read-only root) for a real sync
	bin/modelsync-stack up
	bash e2e/image_smoke.sh

stack-up: install tools
	bin/modelsync-stack up

stack-down: install
	bin/modelsync-stack down

e2e-local: install tools image ## every sample Job on a local single-node Kubernetes (e2e/k8s_e2e.py)
	$(VPY) -m e2e.k8s_e2e

# what e2e-upstream's services are made of (static Go binaries; MariaDB's image from apt's mmdebstrap), the cluster,
# skopeo (pushes its base image) and the aws CLI (makes its bucket)
UPSTREAM_TOOLS := apt registry minio model-registry awscli kubernetes

e2e-upstream: install image ## upstream's own integration suite, unmodified, against our image (e2e/upstream_suite.py)
	PYTHON='$(VPY)' bash e2e/install-tools.sh $(UPSTREAM_TOOLS)
	$(VPY) -m e2e.upstream_suite $(UPSTREAM_SUITE_ARGS)

cluster-up: venv    ## a local single-node Kubernetes in $(MODELSYNC_CACHE)/kubernetes (reused when up; KUBECONFIG printed)
	bash e2e/install-tools.sh kubernetes
	$(VPY) -m e2e.kubernetes up

cluster-down: venv  ## stop it: processes, pods' containers, mounts (the state dir stays)
	$(VPY) -m e2e.kubernetes down

clean:              ## build leftovers (the venv stays: rm -rf .venv to remake it)
	rm -rf build *.egg-info .pytest_cache
