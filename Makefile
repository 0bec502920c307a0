# ipsecfast: two commands for a fresh clone, `make demo` and `make test`.
# Each creates .venv if missing, installs what is missing (system packages too), builds, runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ipsecfast-installed
SRC    := $(wildcard src/*.pyx src/*.pxd src/*.h)

.PHONY: all demo test build sysdeps lint bench debug clean

all: build

# System packages: OpenSSL 3 headers for the compiled core; tshark for the interop tests.
sysdeps:
	@if [ ! -f /usr/include/openssl/evp.h ]; then \
	  echo "installing libssl-dev (OpenSSL 3 headers)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >/dev/null; \
	fi
	@if ! command -v tshark >/dev/null 2>&1; then \
	  echo "installing tshark (Wireshark's dissectors, for tests/test_tshark.py)"; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip "setuptools>=64" wheel "Cython>=3.0" "numpy>=1.24"
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

# Rebuild the extensions in place whenever a .pyx/.pxd changed (setuptools skips up-to-date ones).
build: sysdeps $(STAMP) $(SRC)
	$(PY) setup.py -q build_ext --inplace -j 2

demo: build
	$(PY) -m ipsecfast demo

test: build
	$(PY) -m pytest -q -p no:cacheprovider

lint: build
	$(VENV)/bin/ruff check ipsecfast tests bench
	$(VENV)/bin/mypy

bench: build
	$(PY) bench/esp.py
	$(PY) bench/pcap.py
	$(PY) bench/classify.py
	$(PY) bench/router.py

# Bounds-checked, line-traced build of the compiled core (rebuild with `make clean build` after).
debug: sysdeps $(STAMP)
	IPSECFAST_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force -j 2
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf build src/*.c src/*.cpp ipsecfast/*.so
