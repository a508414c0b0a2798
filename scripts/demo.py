"""
The offline demo, run by `make demo` once the database is migrated and the local
Stripe emulator is up: Stripe objects, sample usage, a usage report, and an admin
login to look at them.

The demo customer's subscription is created on the emulator's clock three days in
the past, so that its current billing period already holds three days of usage to
report. (On real Stripe a new subscription starts now.)

The demo login is a superuser with a random password printed once and stored
nowhere. It is made only where nothing real can be reached: DEBUG on, the local
emulator's key (never a real Stripe key), and a database on this machine. Anywhere
else `make admin-user` asks for a login interactively.
"""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOURS_OF_USAGE = 72
EMULATOR_URL = os.environ.get("STRIPE_EMULATOR_URL", "http://127.0.0.1:12111")
DEMO_USERNAME = "demo"
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}
ADMIN_URL = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/admin/"


def manage(*args: str) -> None:
    print(f"\n$ python manage.py {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def set_emulator_clock(**params) -> None:
    httpx.post(f"{EMULATOR_URL}/_emulator/time", data=params, timeout=5).raise_for_status()


def main() -> int:
    if os.environ.get("STRIPE_SECRET_KEY"):
        print("STRIPE_SECRET_KEY is set: this demo only runs against the local Stripe emulator.")
        return 1
    set_emulator_clock(now=int(time.time()) - HOURS_OF_USAGE * 3600)
    try:
        manage("epsilon_setup", "--demo-customer")
    finally:
        set_emulator_clock(real="true")
    manage("epsilon_simulate", "--hours", str(HOURS_OF_USAGE), "--seed", "1")
    manage("report_usage")
    print_demo_login()
    return 0


def demo_login_refusal() -> str:
    """Why no demo login may be made here, or "" when this is the local demo."""
    from django.conf import settings

    from billing import stripe_api

    if not settings.DEBUG:
        return "DJANGO_DEBUG is off: a demo login with a printed password is for the local demo only."
    if settings.STRIPE_SECRET_KEY != settings.STRIPE_EMULATOR_KEY or not stripe_api.uses_emulator():
        return "the app talks to real Stripe (STRIPE_SECRET_KEY is set): no demo login next to a real key."
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3" and database.get("HOST", "") not in LOCAL_HOSTS:
        return f"the database is on {database['HOST']}, not this machine: no demo login there."
    return ""


def create_demo_login(*, username: str = DEMO_USERNAME) -> str | None:
    """
    The demo superuser's new password, or None when it exists already (its password
    was printed when it was made). Raises BillingError where a demo login is refused.
    """
    from django.contrib.auth import get_user_model

    from billing.errors import BillingError

    if refusal := demo_login_refusal():
        raise BillingError(f"No demo login: {refusal} Use `make admin-user`.")
    users = get_user_model()
    if users.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username, f"{username}@localhost", password)
    return password


def print_demo_login() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "epsilon.settings")
    sys.path.insert(0, str(ROOT))
    django.setup()
    from billing.errors import BillingError

    try:
        password = create_demo_login()
    except BillingError as exc:
        print(f"\n{exc}")
        return
    print(f"\nAdmin login for this local demo (`make run`, then open {ADMIN_URL}):")
    if password is None:
        print(f"  user {DEMO_USERNAME!r} exists; its password was printed when it was made "
              "(`make admin-user` creates another login).")
    else:
        print(f"  user: {DEMO_USERNAME}\n  password: {password}   (printed once, stored nowhere)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
