# Both targets bootstrap .venv with nothing but python3 (pip shows errors only:
# -qq hides the warnings of a machine's own pip configuration).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench clean

$(BIN)/mailer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet --upgrade pip
	$(BIN)/pip install --quiet --quiet -e '.[test]'
	touch $(BIN)/mailer

demo: $(BIN)/mailer
	$(BIN)/mailer send examples/bulletins/2017-03 --recipients examples/recipients --dry-run

lint: $(BIN)/mailer
	$(BIN)/ruff check mailer tests bench
	$(BIN)/ruff format --check mailer tests bench
	$(BIN)/mypy
	$(BIN)/vulture mailer vulture_whitelist.py --min-confidence 60

# Four workers on two cores: most tests wait on a server, a subprocess or a judge.
test: lint
	$(BIN)/pytest -q -n 4

# The unit and in-process tests only (no subprocess, browser, Dovecot, SpamAssassin…).
test-fast: $(BIN)/mailer
	$(BIN)/pytest -q -n 4 -m "not system"

bench: $(BIN)/mailer
	$(BIN)/python bench/compose.py

clean:
	rm -rf $(VENV) previews
