# Set-up and everyday commands. `make demo` and `make test` do all the set-up
# on a fresh Debian machine with Python 3.11; both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARCH := $(shell uname -m)
# torch/torchvision builds known to install on this machine kind (see DESIGN.md, "Facts").
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
DEBIAN_PACKAGES := wordnet-base wordnet-sense-index dataset-fashion-mnist chromium chromium-driver
DEMO_OUT ?= demo/digits

.PHONY: demo demo-natural test install system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-torch: | $(PY)
	$(PIP) install -q $(TORCH_PINS)
	touch $@

$(VENV)/.stamp-install: setup.cfg pyproject.toml $(VENV)/.stamp-torch
	$(PIP) install -q -e '.[dev,dask,crowdkit]'
	touch $@

# Debian packages: WordNet 3.0 (offline), Fashion-MNIST, Chromium for browser tests.
# Installed only when running as root with apt-get; otherwise the tests that need
# them skip with the reason.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing" >&2; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing; tests that need them will skip" >&2; \
	else echo "note: not root; missing Debian packages:$$missing (tests that need them will skip)" >&2; fi

install: $(VENV)/.stamp-install system-deps

# Data: $DATAKIT_DATA, else ../shared/data when it exists; without either, MNIST
# and USPS are downloaded through torchvision when online, or skipped with a note.
demo: install
	@root="$${DATAKIT_DATA:-../shared/data}"; \
	if [ -d "$$root" ]; then export DATAKIT_DATA="$$root"; \
	else unset DATAKIT_DATA; echo "note: no data folder at $$root: MNIST and USPS come from torchvision downloads when online, else they are skipped" >&2; fi; \
	$(VENV)/bin/datakit build recipes/digits.toml --out $(DEMO_OUT) && $(VENV)/bin/datakit info $(DEMO_OUT)

# Photos: CIFAR-10's test set vs the Imagenette subset (whose dog and truck classes correspond to
# CIFAR's), and the Caltech101 sample, all from ../shared/data ($$DATAKIT_DATA); every audit runs.
NATURAL_OUT ?= demo
demo-natural: install
	@root="$${DATAKIT_DATA:-../shared/data}"; \
	if [ ! -d "$$root/cifar10_test_jpg" ]; then echo "demo-natural needs the photos of ../shared/data (or DATAKIT_DATA): $$root/cifar10_test_jpg not found" >&2; exit 1; fi; \
	$(VENV)/bin/datakit build recipes/cifar10_test.toml --out $(NATURAL_OUT)/cifar10_test --data-root "$$root" -q && \
	$(VENV)/bin/datakit build recipes/imagenette_subset.toml --out $(NATURAL_OUT)/imagenette_subset --data-root "$$root" -q && \
	$(VENV)/bin/datakit build recipes/caltech101_sample.toml --out $(NATURAL_OUT)/caltech101_sample --data-root "$$root" -q && \
	$(VENV)/bin/datakit audit $(NATURAL_OUT)/cifar10_test $(NATURAL_OUT)/imagenette_subset \
	  --map imagenette_subset:n02102040=dog,n03417042=truck --out out/demo-natural -q && \
	$(VENV)/bin/datakit audit $(NATURAL_OUT)/caltech101_sample --audits average_image,orientation_artifacts \
	  --out out/demo-caltech -q

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) demo .pytest_cache
