# Set-up and everyday commands. Every target creates .venv and installs what it needs,
# so each works on a clean clone with nothing but Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: on machines with a local wheel store this takes
# the local files; elsewhere pip downloads the build for your platform. Override with
# `make TORCH_SPEC="torch torchvision" ...` to take the newest.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-all lint typecheck check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The example plugin is installed too: the test suite checks the entry-point mechanism
# with it (`pctkit list` shows it with its package of origin).
$(VENV)/.installed: $(BIN)/python pyproject.toml plugins/pctkit-example-plugin/pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[demo,dev,crf]"
	$(BIN)/python -m pip install --quiet --no-deps -e plugins/pctkit-example-plugin
	touch $@

install: $(VENV)/.installed  ## Create .venv and install pctkit with its demo, dev and crf extras

demo: install  ## Train the quickstart recipe (about 5 minutes on 2 CPU cores)
	$(BIN)/pctkit run recipes/quickstart.toml --overwrite

# The fast set skips the tests marked slow (subprocess crash/resume, DDP, wheel build,
# long runs); test-all runs every test, as CI does. Collecting no test is a failure.
test: install  ## Run the fast test set: pytest -m "not slow"
	@$(BIN)/python -m pytest -q -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

test-all: install  ## Run every test, the slow ones included (what CI runs)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: install
	$(BIN)/ruff check pctkit tests benchmarks plugins scripts
	$(BIN)/ruff format --check pctkit tests benchmarks plugins scripts

typecheck: install
	$(BIN)/mypy pctkit

check: lint typecheck test-all  ## Everything CI runs

clean:
	rm -rf $(VENV) runs build dist *.egg-info
