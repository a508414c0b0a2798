"""
Start the local Stripe emulator in the background for the demo, unless one is
already answering, and say loudly that it is an emulator, not Stripe.

    python scripts/stripe_emulator_daemon.py start|stop|status
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PID_FILE = VAR / "stripe-emulator.pid"
LOG_FILE = VAR / "stripe-emulator.log"
DB_FILE = VAR / "stripe-emulator.sqlite3"

BANNER = """\
+--------------------------------------------------------------------------+
|  LOCAL STRIPE EMULATOR at {url:<47}|
|  This is not Stripe: nothing is charged and nothing leaves this machine. |
|  Dashboard links point at dashboard.stripe.com and will not find these  |
|  objects. Set STRIPE_SECRET_KEY=sk_test_... to use real Stripe instead.  |
+--------------------------------------------------------------------------+"""


def is_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_emulator/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start(host: str, port: int) -> int:
    url = f"http://{host}:{port}"
    if not is_up(url):
        VAR.mkdir(exist_ok=True)
        with LOG_FILE.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "stripe_emulator", "--host", host, "--port", str(port), "--db", str(DB_FILE)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        PID_FILE.write_text(str(process.pid))
        deadline = time.monotonic() + 15
        while not is_up(url):
            if process.poll() is not None or time.monotonic() > deadline:
                print(f"The Stripe emulator did not start; see {LOG_FILE}", file=sys.stderr)
                return 1
            time.sleep(0.1)
    print(BANNER.format(url=url))
    return 0


def stop() -> int:
    if not PID_FILE.exists():
        print("No Stripe emulator started by the demo is running.")
        return 0
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        print(f"Stopped the Stripe emulator (pid {pid}).")
    except ProcessLookupError:
        print("The Stripe emulator had already stopped.")
    PID_FILE.unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STRIPE_EMULATOR_PORT", 12111)))
    args = parser.parse_args()
    if args.action == "start":
        return start(args.host, args.port)
    if args.action == "stop":
        return stop()
    url = f"http://{args.host}:{args.port}"
    print(f"Stripe emulator at {url}: {'up' if is_up(url) else 'down'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
