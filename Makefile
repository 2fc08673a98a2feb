# The only ways in. README's Quick start and .ci/run call these targets.
#   make run    - the relay on 127.0.0.1:8000, in-memory state, page at /
#   make test   - the whole suite (installs Python deps, web assets, redis-server and Chromium if missing)
#   make bench  - the relay beside the Node peer (see BENCHMARKS.md)
#   make bench-reconnect - 10,000 viewers reconnecting at once, relay beside the Node peer
#   make bench-hardening - issue 9's hardening findings measured again (bench/hardening.py)
#   make bench-storm - what a gateway that cannot reach WhatsApp costs: 3,000 repeated webhooks/s (bench/storm.py)
#   make demo   - dev only: the relay plus a fake gateway emitting fake QRs
#   make lock   - refresh requirements/*.lock from pyproject.toml (then commit them)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
VENDOR := web/vendor/socket.io.esm.min.js web/vendor/uqr.mjs
UV     := uv==0.13.9

.PHONY: run test bench bench-reconnect bench-hardening bench-storm demo web deps lock clean

# Python packages come from the lock files, pinned with hashes; the project itself on top.
$(VENV)/.run: requirements/runtime.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements/runtime.lock
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.test: requirements/dev.lock pyproject.toml $(VENV)/.run
	$(PIP) install -r requirements/dev.lock
	$(PIP) install --no-deps -e .
	touch $@

# The page's libraries come from npm (pinned by web/package-lock.json), never hand-written:
# socket.io-client, and uqr (the QR encoder that draws the code in the browser). npm ci
# rewrites node_modules/.package-lock.json, so that file stands for "installed from the lock".
NODE_MODULES := web/node_modules/.package-lock.json
$(NODE_MODULES): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

web/vendor/socket.io.esm.min.js: $(NODE_MODULES)
	mkdir -p web/vendor
	cp web/node_modules/socket.io-client/dist/socket.io.esm.min.js $@

web/vendor/uqr.mjs: $(NODE_MODULES)
	mkdir -p web/vendor
	cp web/node_modules/uqr/dist/index.mjs $@

web: $(VENDOR)

deps:
	scripts/system-deps.sh

run: $(VENV)/.run web
	$(VENV)/bin/relay serve

demo: $(VENV)/.run web
	$(VENV)/bin/relay demo

test: deps $(VENV)/.test web
	$(PY) -m pytest

bench: deps $(VENV)/.test web
	$(PY) bench/run.py
	$(PY) bench/reconnect.py

bench-reconnect: deps $(VENV)/.test web
	$(PY) bench/reconnect.py

bench-hardening: deps $(VENV)/.test web
	$(PY) bench/hardening.py

bench-storm: deps $(VENV)/.test web
	$(PY) bench/storm.py

lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(UV)
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --quiet -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes --quiet -o requirements/dev.lock

clean:
	rm -rf $(VENV) web/node_modules web/vendor artifacts .pytest_cache
