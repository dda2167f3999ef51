# bitbucket-webhook-operator: build, test and try it locally.
# `make demo` and `make test` are the two commands a newcomer needs.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# The Kubernetes control plane the tests and the demo run on, built from Go modules.
KUBE_VERSION ?= v1.37.2
ETCD_VERSION ?= v3.6.16
export KUBE_VERSION ETCD_VERSION

CARGO ?= cargo
CLUSTER_DIR ?= $(CURDIR)/.cluster
CONTROLPLANE = $(shell bash hack/build-controlplane.sh 2>/dev/null | tail -n1)
HELM = $(shell bash hack/build-helm.sh 2>/dev/null | tail -n1)
# Flux's notification-controller for the urlFrom.receiverRef tests, built from its Go module.
FLUX = $(shell bash hack/build-flux.sh 2>/dev/null | tail -n1)
CHART = charts/bitbucket-webhook-operator

.PHONY: all build crds envtest flux helm helm-lint cluster cluster-down lint test unit-test integration-test demo bench soak help

all: build

help:
	@echo "make demo          start a local control plane, install the CRDs and examples, show them"
	@echo "make test          lint, unit and integration tests (builds the control plane once)"
	@echo "make build         build the operator and the simulator"
	@echo "make crds          regenerate crds/ from the Rust types"
	@echo "make flux          build Flux's notification-controller from its Go module (cached), for the Receiver tests"
	@echo "make envtest       build etcd, kube-apiserver, kube-controller-manager and kubectl $(KUBE_VERSION) from Go modules (cached)"
	@echo "make cluster       start etcd, kube-apiserver and kube-controller-manager in the background; cluster-down stops them"
	@echo "make soak          50 kills of the operator over 200 Webhooks under faults, restarts of the API server and Bitbucket, then an audit; long fuzzing runs (about 12 minutes)"
	@echo "make bench         the matrix (Cloud, Data Center x 1,000, 10,000 Webhooks; two budget cases; about an hour): Ready time, writes, listings, edit p99, restart cost, memory"

build:
	$(CARGO) build --workspace

crds:
	$(CARGO) run --quiet -- crds --out-dir crds
	$(CARGO) run --quiet -- crds --out-dir $(CHART)/files/crds

envtest:
	@bash hack/build-controlplane.sh

flux:
	@bash hack/build-flux.sh

helm:
	@bash hack/build-helm.sh

helm-lint: helm
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set rbac.scope=namespaced

cluster: envtest
	@BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) $(CARGO) run --quiet -p testenv -- up $(CLUSTER_DIR)

cluster-down:
	@$(CARGO) run --quiet -p testenv -- down $(CLUSTER_DIR)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features otel -- -D warnings

unit-test:
	$(CARGO) test --workspace --lib --bins

integration-test: envtest helm flux
	BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) BBWO_HELM=$(HELM) BBWO_FLUX_DIR=$(FLUX) $(CARGO) test --workspace --tests

test: lint envtest flux helm-lint
	BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) BBWO_HELM=$(HELM) BBWO_FLUX_DIR=$(FLUX) $(CARGO) test --workspace
	BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) $(CARGO) test --features otel --test otel

demo: envtest
	@bash hack/demo.sh

# The long runs of what `make test` runs short: the soak (tests/soak.rs) at 50 kills over
# 200 Webhooks, and every fuzz target (tests/fuzz.rs) with far more inputs.
SOAK_KILLS ?= 50
SOAK_WEBHOOKS ?= 200
# Each fuzz target runs this long (or this many inputs, whichever ends first).
FUZZ_SECONDS ?= 180
FUZZ_ITERATIONS ?= 10000000
soak: envtest
	BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) BBWO_SOAK_KILLS=$(SOAK_KILLS) BBWO_SOAK_WEBHOOKS=$(SOAK_WEBHOOKS) \
		$(CARGO) test --release --test soak -- --nocapture
	BOLERO_RANDOM_TEST_TIME_MS=$(FUZZ_SECONDS)000 BOLERO_RANDOM_ITERATIONS=$(FUZZ_ITERATIONS) \
		$(CARGO) test --release --test fuzz -- --nocapture

# The benchmark matrix (hack/bench.sh): release-built operator against the real control
# plane and the simulator; prints the tables recorded in docs/benchmarks.md.
bench: envtest
	BBWO_CONTROLPLANE_DIR=$(CONTROLPLANE) bash hack/bench.sh
