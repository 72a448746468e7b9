PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PARTNERS := $(basename $(notdir $(wildcard partners/*.yaml)))
PARTNER ?= default
AS_OF ?= 2024-01-10

.PHONY: setup run test lint bench bench-transport bench-overhead partner-smoke partners dist clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,dask]'
	touch $(STAMP)

run: setup
	$(BIN)/offerflow run

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests bench partners
	$(BIN)/ruff format --check src tests bench partners
	$(BIN)/mypy
	$(BIN)/lint-imports

# the bench extra too: the HTTP clients our transport is compared with
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# our HTTP transport against aiohttp and pyreqwest: same requests, same server
bench-transport: $(BENCH_STAMP)
	$(BIN)/python -m bench.transport $(TRANSPORT_ARGS)

# the pipeline's own CPU per request: a run whose transport answers at once, no server
bench-overhead: $(STAMP)
	$(BIN)/python -m bench.overhead $(OVERHEAD_ARGS)

# one partner: validate its config and contracts, then a smoke run against the bundled endpoints
partner-smoke: setup
	$(BIN)/offerflow validate partners/$(PARTNER).yaml --check-endpoints
	$(BIN)/offerflow run --config partners/$(PARTNER).yaml --as-of $(AS_OF) \
		--out runs/smoke --server-workers 1

# every partner in partners/
partners: setup
	@for partner in $(PARTNERS); do $(MAKE) --no-print-directory partner-smoke PARTNER=$$partner || exit 1; done

dist: setup
	rm -rf dist
	$(BIN)/python -m build --outdir dist

clean:
	rm -rf $(VENV) runs dist
