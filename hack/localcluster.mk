# The local cluster: real etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler built from source, plus a pod runner that runs pods as local
# processes of this repository's binaries. See docs/local-cluster.md.
# Included by the Makefile (include hack/localcluster.mk).

LOCALCLUSTER ?= $(BIN)/localcluster

.PHONY: localcluster
localcluster: ## Build the local cluster tool into bin/.
	$(GO) build -o $(LOCALCLUSTER) ./hack/localcluster

.PHONY: cluster-up
cluster-up: build localcluster ## Start the local cluster (kubeconfig: .localcluster/kubeconfig).
	$(LOCALCLUSTER) up --k8s-bin "$$(hack/k8s-binaries.sh)"

.PHONY: cluster-down
cluster-down: localcluster ## Stop everything the local cluster (and make demo) started.
	$(LOCALCLUSTER) down

.PHONY: cluster-status
cluster-status: localcluster ## Show what the local cluster runs.
	@$(LOCALCLUSTER) status

.PHONY: demo
demo: ## The whole product on this machine: cluster, operator, a PushNode, a phone, a delivered PushMessage.
	hack/demo.sh

.PHONY: demo-down
demo-down: cluster-down ## Stop what make demo started.
