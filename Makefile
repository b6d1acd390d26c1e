# Plain entry points. Each target installs what it needs first (idempotent).
.PHONY: setup demo test libtorch python fmt

CARGO ?= cargo

libtorch:
	bash scripts/fetch-libtorch.sh

python:
	bash scripts/setup-python.sh

setup: libtorch

# The main job on the embedded default: synthetic Cohen-layout data -> filtered, verified bags.
demo: libtorch
	$(CARGO) build --release
	./target/release/prep demo --out demo-out

# The whole test suite (BagIt/Croissant validators and PyTorch for parity come from PyPI into .venv).
test: libtorch python
	PREP_PYTHON=$(CURDIR)/.venv/bin/python PREP_TEST_PYTHON=$(CURDIR)/.venv/bin/python $(CARGO) test --no-fail-fast

fmt:
	$(CARGO) fmt --check
