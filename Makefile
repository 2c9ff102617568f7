# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   set up (venv, packages, redis-server) and run `qt demo`
#   make test   set up and run the whole test suite
# Set-up is idempotent and reuses what is already there.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# apt-get needs root; use sudo when we are not root and it exists.
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test setup system-deps up down status clean

demo: setup
	$(BIN)/qt demo

test: setup
	$(BIN)/pytest

setup: system-deps $(STAMP)

# redis-server from Debian (the embedded stack runs its own instance on QT_REDIS_PORT);
# chromium from Debian: the browser test of the portfolio page drives it through Playwright
# (no browser download: Playwright is pointed at /usr/bin/chromium).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  $(APT) update -qq && $(APT) install -y -qq redis-server; }
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing chromium (apt)"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium; }

# Debian's python3 makes venvs only with python3-venv installed: install it on first failure.
$(STAMP): pyproject.toml
	@[ -x $(BIN)/pip ] || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); echo "installing python3-venv (apt)"; \
	  $(APT) update -qq && $(APT) install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

up: setup
	$(BIN)/qt up

down:
	$(BIN)/qt down

status:
	$(BIN)/qt status

clean: down
	rm -rf .data
