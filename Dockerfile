# The modelsync Job image: Python + the binaries it drives (aws CLI, skopeo, oras), non-root, read-only-root safe.
#
#   docker build --build-arg VCS_REF=$(git rev-parse --short HEAD) \
#                --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t quay.io/<org>/modelsync:<tag> .
#
# Where no registry serves base images, pass locally made ones: --build-arg BASE_IMAGE=… --build-arg GO_IMAGE=…
# (e2e/image.sh does that with podman).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS gotools
ARG ORAS_VERSION=v1.3.6
ARG GOPROXY=https://proxy.golang.org,direct
# Static, so it runs on any base. oras v1.3.6 needs Go >= 1.26.7 and the golang images set GOTOOLCHAIN=local: let the
# go command fetch the toolchain oras asks for when a GO_IMAGE given is older (the default is not: no download).
RUN GOTOOLCHAIN=auto CGO_ENABLED=0 go install -ldflags='-s -w' oras.land/oras/cmd/oras@${ORAS_VERSION}

FROM ${BASE_IMAGE}
ARG AWSCLI_VERSION=1.46.3
RUN apt-get update \
 && apt-get install -y --no-install-recommends skopeo ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=gotools /go/bin/oras /usr/local/bin/oras
# The dependencies (read from pyproject.toml) in their own layer, so a change to the code re-installs only the code.
COPY pyproject.toml /src/
RUN python3 -m venv /opt/modelsync \
 && /opt/modelsync/bin/python -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > /src/requirements.txt \
 && /opt/modelsync/bin/pip install --no-cache-dir -r /src/requirements.txt "awscli==${AWSCLI_VERSION}"
COPY README.md /src/
COPY modelsync /src/modelsync
RUN /opt/modelsync/bin/pip install --no-cache-dir --no-deps /src \
 && /opt/modelsync/bin/pip check \
 && rm -rf /src
# HOME and the scratch space on /tmp: the root filesystem may be read-only (mount an emptyDir on /tmp/model-sync).
ENV PATH=/opt/modelsync/bin:$PATH HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 1001:0
ENTRYPOINT ["modelsync"]
# Last, so that a new revision or date does not invalidate the cached layers above.
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="modelsync" \
      org.opencontainers.image.description="Sync ML model files between S3, OCI, HTTP and volumes; register them in Kubeflow Model Registry" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0"
