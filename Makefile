# The two quick-start commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
export PATH := $(HOME)/go/bin:$(PATH)

.PHONY: install tools test demo bench image image-smoke stack-up stack-down clean

install:            ## the package with its test extras, editable
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'

tools:              ## the binaries the job drives and the local stack's servers (idempotent, pinned)
	bash e2e/install-tools.sh

test: install tools ## every test, on the real local stack
	$(PYTHON) -m pytest -q -ra

demo: install tools ## a real end-to-end sync on the local stack: S3 (MinIO) -> OCI modelcar, create_model
	$(PYTHON) -m e2e.demo

bench: install tools ## throughput figures on the local stack (not part of make test)
	$(PYTHON) -m bench

image:              ## the job image localhost/modelsync:dev with podman (bases made locally; see e2e/image.sh)
	bash e2e/image.sh

image-smoke: image  ## run that image as a Kubernetes Job would (uid 1001, read-only root) for a real sync
	bin/modelsync-stack up
	bash e2e/image_smoke.sh

stack-up: tools
	bin/modelsync-stack up

stack-down:
	bin/modelsync-stack down

clean:
	rm -rf build *.egg-info .pytest_cache
