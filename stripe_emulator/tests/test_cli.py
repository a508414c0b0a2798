"""`python -m stripe_emulator` runs in the foreground with a clear banner."""

import os
import socket
import subprocess
import sys
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_banner_and_persistence(tmp_path):
    port = free_port()
    db = tmp_path / "state" / "emu.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--host", "127.0.0.1", "--port", str(port),
         "--db", str(db), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/_emulator/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        health = httpx.get(f"{url}/_emulator/health").json()
        assert health["persistent"] is True
        assert db.exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "LOCAL STRIPE EMULATOR" in out
    assert "NOT Stripe" in out and "Nothing is charged" in out
    assert f"http://127.0.0.1:{port}" in out
    assert "dashboard.stripe.com" in out
    assert str(db) in out
