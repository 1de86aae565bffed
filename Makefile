# The push node and its operator. `make help` lists the targets.

GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/ddpush/ddpush-operator/node.Version=$(VERSION)
FUZZTIME  ?= 10s
# Fuzz targets: package:Target.
FUZZ_TARGETS := $(shell grep -rl --include='*_test.go' '^func Fuzz' node | xargs -r grep -o '^func Fuzz[A-Za-z0-9_]*' | sed -E 's|^(.*)/[^/]*_test.go:func (Fuzz.*)|./\1:\2|' | sort -u)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

CONTROLLER_GEN = $(shell hack/tools.sh controller-gen)

.PHONY: generate
generate: ## Generate deepcopy code from the API markers.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs and RBAC from the markers into config/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd:allowDangerousTypes=false webhook paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: chart-sync
chart-sync: ## Copy the generated CRDs and manager ClusterRole from config/ into the Helm chart.
	hack/chart-sync.sh

.PHONY: chart-check
chart-check: ## Check the Helm chart (sync drift, helm lint --strict, helm template); no cluster needed.
	hack/chart-check.sh

.PHONY: verify-generated
verify-generated: generate manifests chart-sync ## Fail if generated files differ from what is committed.
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run make generate manifests and commit"; exit 1; }
	@if [ -n "$$(git status --porcelain -- api config charts)" ]; then git status --porcelain -- api config charts; echo "untracked generated files: commit them"; exit 1; fi

.PHONY: k8s-binaries
k8s-binaries: ## Build (or reuse) etcd, kube-apiserver, kube-controller-manager and kube-scheduler from source.
	hack/k8s-binaries.sh

.PHONY: build
build: ## Build the manager, pushnode and pushctl into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/manager ./cmd/pushnode ./cmd/pushctl

# The image: built without a container engine (hack/image), as an archive
# that docker load, ctr images import and kind load image-archive accept.
IMAGE_REPO    ?= ghcr.io/ddpush/ddpush-operator
IMAGE_TAG     ?= $(VERSION)
IMAGE_ARCH    ?= $(shell $(GO) env GOARCH)
IMAGE_ARCHIVE ?= $(BIN)/ddpush-operator-image.tar
# File and creation times: the commit's, so that a commit gives one digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image
image: ## Build the image (manager, pushnode, pushctl; user 65532; no shell) into IMAGE_ARCHIVE.
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o $(BIN)/linux_$(IMAGE_ARCH)/ ./cmd/manager ./cmd/pushnode ./cmd/pushctl
	cd hack/image && GOWORK=off GOFLAGS= $(GO) run . --binaries $(CURDIR)/$(BIN)/linux_$(IMAGE_ARCH) \
		--arch $(IMAGE_ARCH) --tag $(IMAGE_REPO):$(IMAGE_TAG) --version $(VERSION) \
		--revision "$$(git rev-parse HEAD 2>/dev/null)" --created $(SOURCE_DATE_EPOCH) --out $(abspath $(IMAGE_ARCHIVE))

.PHONY: image-check
image-check: image ## Load the image with skopeo and a private containerd (as kind load does) and run it with runc (root).
	hack/image-check.sh $(IMAGE_ARCHIVE) $(IMAGE_REPO):$(IMAGE_TAG)

.PHONY: image-test
image-test: ## Test the image builder: archive layouts, config, files, and that the binaries in it run.
	cd hack/image && GOWORK=off GOFLAGS= $(GO) test -race -count=1 -timeout 20m ./...

.PHONY: run
run: build ## Run a node with its data in ./data and the default ports.
	$(BIN)/pushnode

# Tests run through hack/testsummary: go test's result lines, the output
# of failed tests, and at the end every skipped test with its reason.
TESTSUMMARY = $(BIN)/testsummary

.PHONY: testsummary
testsummary:
	@$(GO) build -o $(TESTSUMMARY) ./hack/testsummary

.PHONY: test
test: testsummary ## Run every test with the race detector (builds the Kubernetes test binaries on first use); lists skipped tests at the end.
	assets="$$(hack/k8s-binaries.sh)" && KUBEBUILDER_ASSETS="$$assets" $(TESTSUMMARY) -race -count=1 -timeout 30m ./...

.PHONY: test-short
test-short: testsummary ## Run the tests without the race detector.
	assets="$$(hack/k8s-binaries.sh)" && KUBEBUILDER_ASSETS="$$assets" $(TESTSUMMARY) -count=1 -timeout 30m ./...

STRESS_COUNT ?= 5
STRESS_LOAD  ?= 2

.PHONY: stress
stress: ## The node's packages with -race -count=STRESS_COUNT beside STRESS_LOAD busy loops (shutdown and deadline races).
	STRESS_COUNT=$(STRESS_COUNT) STRESS_LOAD=$(STRESS_LOAD) GO=$(GO) hack/stress.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each.
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

.PHONY: bench-go
bench-go: ## Go benchmarks of the hot paths.
	$(GO) test -run='^$$' -bench=. -benchmem ./node/...

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/
	cd hack/image && GOWORK=off GOFLAGS= $(GO) vet ./...

.PHONY: tidy-check
tidy-check: ## Fail if go.mod/go.sum (ours, hack/k8s's and hack/image's) are not tidy.
	$(GO) mod tidy -diff
	cd hack/k8s && GOWORK=off GOFLAGS= $(GO) mod tidy -diff
	cd hack/image && GOWORK=off GOFLAGS= $(GO) mod tidy -diff

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf $(BIN)

.PHONY: e2e
e2e: ## The end-to-end suite: local cluster up, helm install, kubectl scenarios, cluster down.
	hack/e2e.sh


.PHONY: bench-operator
bench-operator: ## PushMessages create -> Delivered on a real apiserver, against a do-nothing controller's ceiling (PMBENCH_COUNT, default 800; PMBENCH_PAIRS, default 3).
	assets="$$(hack/k8s-binaries.sh)" && KUBEBUILDER_ASSETS="$$assets" $(GO) test -run='^$$' -bench=BenchmarkPushMessages -benchtime=1x -timeout 30m ./controllers/

.PHONY: bench
bench: ## The load tool against a node and this machine's do-nothing ceiling (BENCH_QUICK=1: a short run); see BENCHMARKS.md.
	hack/bench.sh

include hack/localcluster.mk
