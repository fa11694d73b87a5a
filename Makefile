# Two commands for a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install lint browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hie demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The pages' tests click in Debian's Chromium: installed here when missing and we may (root
# with apt), with a Chinese font for the screenshots they keep; else one line says what to
# install.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the page tests" >&2; \
	    apt-get install -y -q chromium fonts-wqy-microhei >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null && apt-get install -y -q chromium fonts-wqy-microhei >/dev/null; }; \
	  fi; \
	  test -x $(CHROMIUM) || { echo "the page tests need Debian's Chromium at $(CHROMIUM): run 'apt-get install chromium' as root" >&2; exit 1; }; }

# The suite in two worker processes, a test module to a worker (its module-scoped servers
# start once); each worker starts its own embedded servers. `pytest` alone runs it in one.
TEST_WORKERS ?= 2
test: lint browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) .hie
