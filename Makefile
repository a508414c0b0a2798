# Epsilon Billing. `make demo` runs the offline demo; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The test suite runs twice: on SQLite (the embedded default) and on PostgreSQL.
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: install demo demo-cycle emulator emulator-stop migrate admin-user run serve test test-sqlite test-postgres clean

$(BIN)/.installed: requirements.txt stripe_emulator/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/python manage.py migrate --verbosity 0

emulator: install
	$(BIN)/python scripts/stripe_emulator_daemon.py start

emulator-stop: install
	$(BIN)/python scripts/stripe_emulator_daemon.py stop

demo: migrate emulator
	$(BIN)/python scripts/demo.py
	@echo
	@echo "Open the admin: make run, then http://127.0.0.1:$(PORT)/admin/ with the login above."
	@echo "Look at: Epsilon billing > Usage reports (every report, its period, value and status),"
	@echo "         Epsilon billing > Meters; Embedded meter > Usage events;"
	@echo "         Djstripe > Customers and Subscriptions (select some: Report usage now)."

# A whole billing cycle on a Stripe test clock: webhooks, report, finalized invoice.
demo-cycle: migrate emulator
	$(BIN)/python scripts/demo_cycle.py

admin-user: migrate
	$(BIN)/python manage.py createsuperuser

run: migrate emulator
	@echo "Admin: http://127.0.0.1:$(PORT)/admin/  login: demo (password printed by make demo; make admin-user for another)"
	$(BIN)/python manage.py runserver $(PORT)

# The browser tests drive Debian's chromium; install it when missing (as root). Under a
# lock, so that two `make test` runs at once wait for one install instead of failing.
browser:
	@command -v chromium >/dev/null || flock /tmp/epsilon-apt.lock sh -c 'command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)'

# The production server (gunicorn, deploy/gunicorn.conf.py) with static files collected
# for WhiteNoise: `make serve PORT=8080`. Production settings come from the environment.
serve: migrate
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	PORT=$(PORT) $(BIN)/gunicorn -c deploy/gunicorn.conf.py

test: test-sqlite test-postgres

test-sqlite: install browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The emulator's own tests (stripe_emulator/tests) use no database: the SQLite pass runs them.
test-postgres: install browser
	DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/pytest -o testpaths=tests $(PYTEST_ARGS)

clean: emulator-stop
	rm -rf var
