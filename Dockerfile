# syntax=docker/dockerfile:1
#
# The project's one image: the operator's manager (/manager, the entrypoint),
# the push node (/pushnode, which the PushNode StatefulSets run as their
# command) and the pushctl CLI (/pushctl). Static binaries on a distroless
# base, running as the non-root user 65532.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     -t ghcr.io/ddpush/ddpush-operator:"$(git describe --tags --always --dirty)" .
#
# Tag the image with VERSION: the manager names
# ghcr.io/ddpush/ddpush-operator:<VERSION> as the default push node image
# (":latest" when VERSION is "dev"), and the Helm chart defaults to
# ghcr.io/ddpush/ddpush-operator:<appVersion>. Multi-platform builds
# (--platform linux/amd64,linux/arm64) cross-compile on the build machine.

FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
# The packages the three programs are built from (see .dockerignore).
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY node/ node/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/ddpush/ddpush-operator/node.Version=${VERSION}" \
      -o /out/ ./cmd/manager ./cmd/pushnode ./cmd/pushctl

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=""
LABEL org.opencontainers.image.title="ddpush-operator" \
      org.opencontainers.image.description="Kubernetes operator for DDPush-compatible push nodes, and the push node itself (/manager, /pushnode, /pushctl)" \
      org.opencontainers.image.source="https://github.com/ddpush/ddpush-operator" \
      org.opencontainers.image.url="https://github.com/ddpush/ddpush-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="ddpush" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=builder /out/manager /out/pushnode /out/pushctl /
# A writable working directory, so that `docker run --entrypoint /pushnode`
# works as is (its default --data-dir is ./data). In Kubernetes the node's
# data is the PersistentVolume at /data and the root filesystem is read-only.
WORKDIR /home/nonroot
USER 65532:65532
# manager: 8080 metrics, 8081 health probes.
# pushnode: 9966 UDP+TCP phones, 9999 TCP app servers, 8080 HTTP API.
EXPOSE 8080/tcp 8081/tcp 9966/udp 9966/tcp 9999/tcp
ENTRYPOINT ["/manager"]
