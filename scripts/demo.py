"""
The offline demo, run by `make demo` once the database is migrated and the local
Stripe emulator is up: Stripe objects, sample usage, a usage report.

The demo customer's subscription is created on the emulator's clock three days in
the past, so that its current billing period already holds three days of usage to
report. (On real Stripe a new subscription starts now.)
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOURS_OF_USAGE = 72
EMULATOR_URL = os.environ.get("STRIPE_EMULATOR_URL", "http://127.0.0.1:12111")


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
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
