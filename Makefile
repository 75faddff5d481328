# triarch build. Tools are pinned and installed into ./bin with `go install`.
SHELL := /usr/bin/env bash
BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

BUF_VERSION                 := v1.75.0
PROTOC_GEN_GO_VERSION       := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION  := v1.6.0
GRPC_GATEWAY_VERSION        := v2.33.0

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all tools generate build test test-short test-stress lint breaking image up down dev clean e2e verify verify-selftest

all: build

tools: $(BIN)/.tools-$(BUF_VERSION)-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)-$(GRPC_GATEWAY_VERSION)

$(BIN)/.tools-%:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(BIN) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	GOBIN=$(BIN) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	@rm -f $(BIN)/.tools-* && touch $@

# generate rebuilds gen/ from proto/ (gen/openapi/openapi.go is hand-written and kept).
generate: tools
	rm -rf gen/triarch gen/openapi/*.json
	buf generate
	buf generate --template buf.gen.openapi.yaml --path proto/triarch/v1

lint: tools
	buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	@go mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; go mod tidy -diff; exit 1; }

breaking: tools
	buf breaking --against '.git#branch=main'

build:
	go build -ldflags '$(LDFLAGS)' -o $(BIN)/triarch ./cmd/triarch

# test is the README's test command: every package, with the race detector.
test:
	go test -race -timeout 15m ./...

test-short:
	go test -short ./...

# test-stress runs the suite with -race beside two CPU burners, then the packages with cluster
# tests three more times (scripts/test-stress): what passes here does not need an idle machine.
test-stress:
	scripts/test-stress

dev: build
	$(BIN)/triarch dev

# verify runs the verification suite: a cluster of processes under a seeded fault schedule,
# then the checkers of internal/verify (see the README's "Verification"). OUT keeps the
# history, schedule and porcupine visualizations (a temporary directory, kept on failure, by
# default).
SEED     ?= 1
DURATION ?= 2m
FAULTS   ?= kill,pause,wipe
CHANNELS ?= 8
CLIENTS  ?= 6
REPLICAS ?= 3
REST     ?= 0
OUT      ?=
LOGLEVEL ?= warn
verify:
	go test -count=1 -timeout 4h -v -run TestVerify ./tests/verify \
		-args -verify.seed=$(SEED) -verify.duration=$(DURATION) -verify.faults=$(FAULTS) \
		-verify.channels=$(CHANNELS) -verify.clients=$(CLIENTS) -verify.replicas=$(REPLICAS) -verify.rest=$(REST) -verify.out=$(OUT) -verify.log-level=$(LOGLEVEL)

# verify-selftest runs the suite against binaries with a bug planted (built with -tags
# plantedbug): it passes only if the checkers catch each bug, so a checker that cannot fail
# fails here.
verify-selftest:
	for bug in lost-ack stale-read; do \
		go test -count=1 -timeout 30m -v -run TestVerify ./tests/verify \
			-args -verify.seed=$(SEED) -verify.duration=20s -verify.faults=kill \
			-verify.planted=$$bug -verify.log-level=$(LOGLEVEL) || exit 1; \
	done

# image builds a static binary and a FROM-scratch image from it (no base image is pulled).
image:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o deploy/triarch ./cmd/triarch
	mkdir -p deploy/rootfs/data
	docker build -t triarch:latest -f deploy/Dockerfile deploy

# e2e runs the docker-compose cluster end to end: send, kill a replica, keep sending, verify.
e2e: image
	TRIARCH_E2E=1 COMPOSE="$(COMPOSE)" go test -count=1 -timeout 10m -v ./tests/e2e/

up: image
	$(COMPOSE) up -d

down:
	$(COMPOSE) down -v

COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

clean:
	rm -rf $(BIN) deploy/triarch deploy/rootfs
