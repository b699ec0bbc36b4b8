# MEMO — `make up` and `make test` are the two commands a user needs (README.md).
# Every step is idempotent: a second run does only what is missing.

SHELL      := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV       := .venv
PY         := $(VENV)/bin/python
SYSPY      := /usr/bin/python3
APT_PKGS   := python3-bpfcc bpfcc-tools bpftool linux-headers-amd64 python3-venv
STAMPS     := .stamps
KREL       := $(shell uname -r)
PYTEST_ARGS ?=
# The machine image keeps the CPU torch wheel here; with it pip never reaches for CUDA builds.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup apt kernel-headers venv test test-slow lint bench up down clean help

help:
	@echo "make setup      install what is missing (apt packages, kernel headers link, .venv)"
	@echo "make test       the test suite (root: kernel tests run for real)"
	@echo "make test-slow  the long suites behind the 'slow' marker"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks under bench/ (prints tables, writes bench/results/*.json)"

setup: apt kernel-headers venv

apt:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "setup: need root to install:$$missing" >&2; exit 1; fi; \
	  echo "setup: installing$$missing"; \
	  apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# bcc compiles against the running kernel's headers. Debian ships none for this machine's 6.18
# kernel; the 6.1 headers serve tracepoint programs (their layouts come from the tracepoint format).
kernel-headers:
	@if [ ! -e /lib/modules/$(KREL)/build ]; then \
	  hdr=$$(ls -d /lib/modules/*-amd64 2>/dev/null | sort -V | tail -n1); \
	  if [ -z "$$hdr" ]; then echo "setup: WARNING: no kernel headers found; eBPF tests will skip" >&2; \
	  elif [ "$$(id -u)" != 0 ]; then echo "setup: WARNING: run as root to link $$hdr for $(KREL)" >&2; \
	  else echo "setup: WARNING: no headers for kernel $(KREL); linking /lib/modules/$(KREL) -> $$hdr"; \
	    rm -rf /lib/modules/$(KREL); ln -s $$hdr /lib/modules/$(KREL); fi; \
	fi

venv: $(STAMPS)/venv

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(SYSPY) -m venv $(VENV)
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  if [ -d /usr/lib/python3/dist-packages/bcc ]; then ln -sfn /usr/lib/python3/dist-packages/bcc $$site/bcc; fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(PY) -m pip install -q $(FIND_LINKS) -e '.[dev]'
	@touch $@

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	@mkdir -p bench/results
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(STAMPS) build *.egg-info
