# authsidecar developer commands. Every target sets up its own virtualenv; nothing is needed but python3 (3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
DRIZZLE_KIT := $(TOOLS)/node_modules/.bin/drizzle-kit
BETTER_AUTH := $(TOOLS)/node_modules/@node-rs/argon2/package.json
TS_CLIENT := clients/typescript/node_modules/.installed
XDS := $(TOOLS)/xds-protos/.installed

.PHONY: run test lint format proto bench migrate buf-lint clean lock
.PHONY: test-fast test-contract test-e2e test-interop
.PHONY: ts-client proto-ts
.PHONY: go-tools go-client proto-go
.PHONY: image compose-up

# Dependencies come from the lock file (exact versions and hashes, runtime and development), then the project itself.
$(STAMP): pyproject.toml clients/python/pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ./clients/python -e .
	touch $(STAMP)

# What serving needs, and nothing more: the runtime lock file (no test or lint tools), with pip's progress shown.
RUN_STAMP := $(VENV)/.runtime
$(RUN_STAMP): pyproject.toml clients/python/pyproject.toml requirements/runtime.lock
	@echo "== installing authsidecar's runtime dependencies into $(VENV) (requirements/runtime.lock)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --progress-bar on -r requirements/runtime.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e ./clients/python -e .
	touch $(RUN_STAMP)

## Serve on the embedded default (SQLite file + in-process cache) unless DATABASE_URL / REDIS_URL are set.
run: $(RUN_STAMP)
	$(BIN)/authsidecar migrate
	$(BIN)/authsidecar serve

## Apply database migrations to DATABASE_URL (or the embedded SQLite file).
migrate: $(RUN_STAMP)
	$(BIN)/authsidecar migrate

## All tests, in parallel (they mostly wait on servers and databases): every tier below. TEST_WORKERS processes
## (default 4 on this 2-core kind; at most 5: each gets its own port range, tests/e2e/conftest.py); tests of one
## file stay in one process (module-scoped servers start once).
TEST_WORKERS ?= 4
XDIST = -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP) $(DRIZZLE_KIT) $(BETTER_AUTH) $(TS_CLIENT) $(XDS)
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

## The fast tier, for your own loop: unit tests and pure logic. No server process, database, node, Go or nginx.
test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit -m "not interop" $(PYTEST_ARGS)

## The contract tier: storage and service contracts on every backend (Postgres+Redis, SQLite+in-process, MariaDB).
test-contract: $(STAMP)
	$(BIN)/pytest $(XDIST) tests/integration -m "not interop" $(PYTEST_ARGS)

## The end-to-end tier: the real server on a real port, through the generated stubs; migrations.
test-e2e: $(STAMP) $(XDS)
	$(BIN)/pytest $(XDIST) tests/e2e tests/migrations -m "not interop" $(PYTEST_ARGS)

## The interop tier: Better Auth under node, the Go and TypeScript clients, buf, nginx, drizzle-kit, Redis
## Cluster / Sentinel / TLS topologies (tests/conftest.py INTEROP_FILES).
test-interop: $(STAMP) $(DRIZZLE_KIT) $(BETTER_AUTH) $(TS_CLIENT) $(XDS)
	$(BIN)/pytest $(XDIST) -m interop $(PYTEST_ARGS)

## Envoy's generated stubs for the ext_authz tests, beside the virtualenv (requirements/xds.lock says why).
$(XDS): requirements/xds.lock | $(STAMP)
	rm -rf $(TOOLS)/xds-protos
	$(BIN)/pip install --quiet --no-deps --require-hashes --target $(TOOLS)/xds-protos -r requirements/xds.lock
	touch $(XDS)

$(BUF):
	npm install --silent --no-audit --no-fund --save-exact --prefix $(TOOLS) @bufbuild/buf@1.75.0

## drizzle-orm, drizzle-kit and TypeScript: the tests compile `generate --format drizzle` output and run drizzle-kit on it.
$(DRIZZLE_KIT): $(BUF)
	npm install --silent --no-audit --no-fund --save-exact --prefix $(TOOLS) drizzle-orm@0.45.4 drizzle-kit@0.31.11 typescript@5.9.3

## better-auth with pg, ioredis and @node-rs/argon2: the compatibility tests and the benchmark run a real Better Auth app (tests/better_auth/app.mjs).
$(BETTER_AUTH): $(DRIZZLE_KIT)
	npm install --silent --no-audit --no-fund --save-exact --prefix $(TOOLS) better-auth@1.7.25 pg@8.23.1 ioredis@5.8.2 @node-rs/argon2@2.2.1

## The TypeScript client's npm packages, exactly as in clients/typescript/package-lock.json;
## tests/e2e/test_typescript_client.py compiles the client with its tsc and runs its `node --test` suite.
$(TS_CLIENT): clients/typescript/package.json clients/typescript/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix clients/typescript
	touch $(TS_CLIENT)

## Install and compile the TypeScript client (clients/typescript/dist).
ts-client: $(TS_CLIENT)
	cd clients/typescript && node_modules/.bin/tsc -p .

## Regenerate clients/typescript/src/gen from proto/ (committed; buf and protoc-gen-es pinned in its package-lock.json).
proto-ts: $(TS_CLIENT)
	cd clients/typescript && node_modules/.bin/buf generate

## The Go client's toolchain and libraries from Debian's packages, only those missing (root; clients/go/debian-deps.sh).
go-tools:
	bash clients/go/debian-deps.sh

## Build, vet and format-check the Go client OFFLINE: clients/go/vendor.sh assembles vendor/ (not committed) from
## Debian's /usr/share/gocode when stale; tests/e2e/test_go_client.py runs its `go test` against the real server.
go-client:
	bash clients/go/vendor.sh
	cd clients/go && test -z "$$(gofmt -l *.go authsidecarv1)" || { echo "gofmt -w needed:"; gofmt -l *.go authsidecarv1; exit 1; }
	cd clients/go && GOFLAGS=-mod=vendor GOPROXY=off go vet ./...

## Regenerate clients/go/authsidecarv1 from proto/ (committed; Debian's protoc, protoc-gen-go and protoc-gen-go-grpc).
proto-go:
	bash clients/go/generate.sh

buf-lint: $(BUF)
	cd proto && ../$(BUF) lint

lint: $(STAMP) buf-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Regenerate clients/python stubs from proto/ (committed; reproducible with the pinned grpcio-tools).
proto: $(STAMP)
	$(BIN)/python clients/python/generate.py
	$(BIN)/python -m grpc_tools.protoc -I server/authsidecar/transport/grpc/ext_authz -I proto \
	  --python_out=server/authsidecar/transport/grpc/ext_authz --pyi_out=server/authsidecar/transport/grpc/ext_authz \
	  authsidecar_ext_authz.proto

## The container image (server/container/Dockerfile; needs a Docker engine) and the compose stack with Postgres and Redis.
image:
	docker build -f server/container/Dockerfile -t authsidecar:local .

compose-up:
	docker compose -f server/container/compose.yaml up --build

## Benchmark against Postgres + Redis; writes tests/benchmarks/RESULTS.md.
bench: $(STAMP) $(BETTER_AUTH)
	$(BIN)/python -m tests.benchmarks.run

## Re-resolve requirements/runtime.lock and requirements/dev.lock from pyproject.toml (pip-tools, pinned).
## The server depends on authsidecar-client, which is not on an index: the resolver is shown a wheel built from
## clients/python, and its line is then dropped from the lock files (it is installed from the tree, see $(STAMP)).
CLIENT_WHEELS := $(TOOLS)/client-wheel
LOCK_FLAGS := -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --find-links $(CLIENT_WHEELS)
lock:
	$(PYTHON) -m venv $(TOOLS)/pip-tools
	$(TOOLS)/pip-tools/bin/pip install --quiet pip-tools==7.6.2
	rm -rf $(CLIENT_WHEELS) && $(TOOLS)/pip-tools/bin/pip wheel --quiet --no-deps -w $(CLIENT_WHEELS) ./clients/python
	$(TOOLS)/pip-tools/bin/pip-compile $(LOCK_FLAGS) -o requirements/runtime.lock pyproject.toml requirements/build.in
	$(TOOLS)/pip-tools/bin/pip-compile $(LOCK_FLAGS) --extra dev -o requirements/dev.lock pyproject.toml
	$(PYTHON) requirements/drop_local.py requirements/runtime.lock requirements/dev.lock

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
	rm -rf clients/typescript/node_modules clients/typescript/dist
	rm -rf clients/go/vendor
