# edgelb — see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin

.PHONY: help build images sandbox test test-unit test-e2e test-ha proto proto-check deps bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build lbd, lbctl and the cloud controller manager into bin/
	$(GO) build -o $(BIN)/ ./lbd ./lbctl

images: ## OCI image archives of lbd and the CCM in bin/images (no daemon, reproducible: same commit, same digests)
	$(GO) run ./packaging/images/cmd/edgelb-images -out $(BIN)/images

sandbox: ## run a whole edge cluster with live traffic in a User-Mode Linux guest
	bash scripts/sandbox.sh

test: ## everything CI runs: proto checks, unit tests, fuzz smoke, real-kernel and real-apiserver scenarios
	bash scripts/test.sh

test-unit: ## go vet and go test ./... (quick, no kernel, no apiserver)
	$(GO) vet ./...
	$(GO) test ./...

test-ha: ## failover scenarios in the UML guest (SIGKILL owner/leader, cut link, one-way partition, drain, rolling restart)
	bash scripts/uml-deps.sh
	EDGELB_UML=1 $(GO) test -count=1 -v -timeout 30m -run 'TestUML$$' ./integration/ha/

proto: ## regenerate Go code from proto/ with pinned buf and plugins
	bash scripts/proto.sh generate

proto-check: ## buf lint, generated code up to date, buf breaking against the release tag / merge base with main (scripts/proto.sh)
	bash scripts/proto.sh check

bench: ## print the performance table
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
