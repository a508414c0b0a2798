"""
Benchmark the Stripe emulator's meter event intake: `POST /v2/billing/meter_event_stream`
(calls of 100 events) and `GET /_emulator/meter_event_totals`, measured as the
emulator's own CPU time, not the wall time (the machine is shared).

    .venv/bin/python bench/emulator_meter_events_bench.py                       # this checkout
    .venv/bin/python bench/emulator_meter_events_bench.py --emulator-from DIR    # another copy
    .venv/bin/python bench/emulator_meter_events_bench.py --baseline-ref f44fe30 # before/after
    .venv/bin/python bench/emulator_meter_events_bench.py --profile var/bench/stream.pstats

1. Setup (once, kept): C customers (`--customers`, default 100,000 as in the reporting
   run), each subscribed to a metered price of a `sum` meter, made by the API's own
   handlers (`POST /_emulator/bulk_subscriptions`) and kept as a SQLite state file
   (var/bench/emulator-meter-events-<C>.sqlite3). A run starts from a fresh copy of it
   (the emulator with `--db`, as in bench/report_usage_bench.py).
2. The emulator in its own process (`python -m stripe_emulator --quiet --billing-tick 0`,
   run from `--emulator-from DIR`, default this checkout), no latency, no limits, a live
   key (as the reporting run). One meter event session, then `--calls` N stream calls
   (default 1,000) of 100 events from `--threads` client threads (raw httpx, JSON bodies,
   an Idempotency-Key per call as stripe-python sends): event j of call k is for customer
   (100 k + j) mod C, so a call has 100 distinct customers, as in a reporting run.
3. Measured: the emulator process's CPU seconds (utime + stime of all its threads,
   /proc/<pid>/stat) over the stream phase, per 1,000 events, and as events per CPU
   second (what one core could absorb); the wall time and events/s (shared machine:
   indicative only). Then one `GET /_emulator/meter_event_totals` over everything (as
   bench/report_usage_bench.py's check reads it): CPU and wall; the emulator's peak
   RSS. The run fails unless the totals hold exactly the events sent.

`--baseline-ref REF` also measures the emulator of git commit REF (a `git worktree` under
var/bench/, made once), runs alternating: `--runs` each. `--profile FILE` instead runs
the emulator of this checkout in this process (werkzeug's test client, no HTTP) under
cProfile for the stream phase and prints the top functions.

Results: stdout and var/bench/emulator_meter_events.json.
"""

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench"
KEY = "sk_live_EpsilonEmulatorBenchKey000000000000"
EVENT_NAME = "execution_seconds"
BATCH = 100
TICKS = os.sysconf("SC_CLK_TCK")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=100000)
    p.add_argument("--calls", type=int, default=1000, help="stream calls of 100 events")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--port", type=int, default=12187)
    p.add_argument("--emulator-from", type=Path, default=ROOT,
                   help="directory holding the stripe_emulator package to run (default: this checkout)")
    p.add_argument("--baseline-ref", default=None,
                   help="also measure the emulator of this git commit (a worktree under var/bench/)")
    p.add_argument("--profile", type=Path, default=None,
                   help="profile the stream phase in-process (this checkout) into this .pstats file")
    p.add_argument("--fresh", action="store_true", help="make the setup snapshot again")
    return p.parse_args()


# --- the emulator process ------------------------------------------------------------


def start(directory: Path, port: int, db: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(directory))
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--quiet",
         "--billing-tick", "0", "--db", str(db)],
        cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                raise SystemExit(f"the emulator from {directory} exited ({process.returncode})")
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the emulator did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kb / 1024, 1)


# --- setup -------------------------------------------------------------------------------


def snapshot_path(args) -> Path:
    return RESULTS / f"emulator-meter-events-{args.customers}.sqlite3"


def make_snapshot(args) -> None:
    path = snapshot_path(args)
    for suffix in ("", "-wal", "-shm", ".json"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    process = start(ROOT, args.port, path)
    base = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    try:
        with httpx.Client(base_url=base, auth=(KEY, ""), timeout=60) as http:
            meter = http.post("/v1/billing/meters", data={
                "display_name": "Execution seconds", "event_name": EVENT_NAME,
                "default_aggregation[formula]": "sum"}).raise_for_status().json()
            product = http.post("/v1/products", data={"name": "Epsilon"}).raise_for_status().json()
            price = http.post("/v1/prices", data={
                "currency": "usd", "product": product["id"], "unit_amount_decimal": "0.05",
                "recurring[interval]": "month", "recurring[usage_type]": "metered",
                "recurring[meter]": meter["id"]}).raise_for_status().json()

            # The API's own handlers, many pairs per transaction (bulk.py): the same
            # objects as POST /v1/customers + /v1/subscriptions, in seconds.
            made = http.post("/_emulator/bulk_subscriptions", data={
                "count": str(args.customers), "price": price["id"], "batch": "500"},
                timeout=3600).raise_for_status().json()
            customers = made["customers"]
    finally:
        stop(process)
    Path(f"{path}.json").write_text(json.dumps({"meter": meter["id"], "customers": customers}))
    print(f"setup: {args.customers} customers and subscriptions in {time.monotonic() - started:.0f} s")


def events_for(k: int, customers: list, now: int) -> list:
    ts = datetime.fromtimestamp(now - 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return [{"event_name": EVENT_NAME, "identifier": f"bench-{k}-{j}", "timestamp": ts,
             "payload": {"stripe_customer_id": customers[(BATCH * k + j) % len(customers)],
                         "value": str((k + j) % 9 + 1)}}
            for j in range(BATCH)]


def expected_total(calls: int) -> Decimal:
    return Decimal(sum((k + j) % 9 + 1 for k in range(calls) for j in range(BATCH)))


# --- one measured run ----------------------------------------------------------------------


def fresh_copy(args):
    """(the setup's metadata, a fresh copy of its emulator state file to run on)."""
    snap = snapshot_path(args)
    meta = json.loads(Path(f"{snap}.json").read_text())
    work = RESULTS / f"emulator-meter-events-{args.customers}-work.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
        if Path(f"{snap}{suffix}").exists():
            shutil.copyfile(f"{snap}{suffix}", f"{work}{suffix}")
    return meta, work


def measure(args, directory: Path, label: str, run: int) -> dict:
    meta, work = fresh_copy(args)
    process = start(directory, args.port, work)
    base = f"http://127.0.0.1:{args.port}"
    try:
        httpx.post(f"{base}/_emulator/time", data={"real": "true"}).raise_for_status()
        session = httpx.post(f"{base}/v2/billing/meter_event_session", auth=(KEY, ""),
                             json={}, timeout=60).raise_for_status().json()
        token = session["authentication_token"]
        now = int(time.time())
        bodies = [json.dumps({"events": events_for(k, meta["customers"], now)}) for k in range(args.calls)]
        local = threading.local()
        failures = []

        def send(k):
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=base, timeout=120, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                    "Stripe-Version": "2026-08-26.preview"})
            r = local.http.post("/v2/billing/meter_event_stream", content=bodies[k],
                                headers={"Idempotency-Key": str(uuid.uuid4())})
            if r.status_code != 200:
                failures.append((r.status_code, r.text[:300]))

        cpu0, wall0 = cpu_seconds(process.pid), time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(send, range(args.calls)))
        wall, cpu = time.monotonic() - wall0, cpu_seconds(process.pid) - cpu0
        if failures:
            raise SystemExit(f"{len(failures)} stream calls failed, e.g. {failures[0]}")

        cpu0, wall0 = cpu_seconds(process.pid), time.monotonic()
        r = httpx.get(f"{base}/_emulator/meter_event_totals", timeout=600).raise_for_status()
        totals_wall, totals_cpu = time.monotonic() - wall0, cpu_seconds(process.pid) - cpu0
        totals = r.json()
        peak_rss_mb = peak_rss(process.pid)
    finally:
        stop(process)
    n = args.calls * BATCH
    exact = totals["count"] == n and Decimal(totals["total"]) == expected_total(args.calls)
    if not exact:
        raise SystemExit(f"{label}: the emulator holds {totals['count']} events, "
                         f"total {totals['total']}, expected {n}, {expected_total(args.calls)}")
    return {"label": label, "run": run, "emulator": str(directory), "events": n,
            "stream_cpu_s": round(cpu, 3), "cpu_s_per_1000_events": round(cpu / n * 1000, 4),
            "events_per_cpu_s": round(n / cpu) if cpu else None,
            "stream_wall_s": round(wall, 3), "events_per_wall_s": round(n / wall),
            "totals_cpu_s": round(totals_cpu, 3), "totals_wall_s": round(totals_wall, 3),
            "totals_bytes": len(r.content), "peak_rss_mb": peak_rss_mb, "exact": exact}


# --- in-process profile ------------------------------------------------------------------------


def profile(args) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    from werkzeug.test import Client

    from stripe_emulator.app import EmulatorApp
    from stripe_emulator.store import Store

    meta, work = fresh_copy(args)
    store = Store(str(work))
    store.reset_time()
    app = EmulatorApp(store, billing_tick=None)
    client = Client(app)
    session = client.post("/v2/billing/meter_event_session", json={},
                          headers={"Authorization": f"Bearer {KEY}"}).get_json()
    headers = {"Authorization": f"Bearer {session['authentication_token']}"}
    now = int(time.time())
    bodies = [{"events": events_for(k, meta["customers"], now)} for k in range(args.calls)]
    prof = cProfile.Profile(time.process_time)  # CPU time: the machine is shared
    cpu0 = time.process_time()
    prof.enable()
    for body in bodies:
        r = client.post("/v2/billing/meter_event_stream", json=body,
                        headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code == 200, r.get_data(as_text=True)
    prof.disable()
    cpu = time.process_time() - cpu0
    cpu1 = time.process_time()
    totals = client.get("/_emulator/meter_event_totals").get_json()
    totals_cpu = time.process_time() - cpu1
    app.close()
    assert totals["count"] == args.calls * BATCH
    prof.dump_stats(str(args.profile))
    n = args.calls * BATCH
    print(f"in-process (profiled): {n} events, {cpu:.2f} CPU s, {cpu / n * 1000:.4f} CPU s per 1,000 "
          f"events; totals {totals_cpu:.2f} CPU s (not profiled)")
    pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)


# --- main -----------------------------------------------------------------------------------------


def main():
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fresh or not Path(f"{snapshot_path(args)}.json").exists():
        make_snapshot(args)
    if args.profile:
        profile(args)
        return
    targets = [("this" if args.emulator_from == ROOT else str(args.emulator_from), args.emulator_from)]
    if args.baseline_ref:
        sha = subprocess.check_output(["git", "rev-parse", "--short", args.baseline_ref], cwd=ROOT,
                                      text=True).strip()
        tree = RESULTS / f"worktree-{sha}"
        if not tree.exists():
            subprocess.check_call(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT)
        targets.insert(0, (f"baseline {sha}", tree))
    results = []
    for run, (label, directory) in itertools.product(range(args.runs), targets):
        out = measure(args, directory, label, run)
        results.append(out)
        print(json.dumps(out))
    print(f"\n{'emulator':<22} {'events':>7} {'CPU s/1k ev':>12} {'ev/CPU-s':>9} {'ev/s wall':>10} "
          f"{'totals CPU s':>13}")
    for label, _ in targets:
        mine = [r for r in results if r["label"] == label]
        med = lambda key: statistics.median(r[key] for r in mine)  # noqa: E731
        print(f"{label:<22} {mine[0]['events']:>7} {med('cpu_s_per_1000_events'):>12.4f} "
              f"{med('events_per_cpu_s'):>9.0f} {med('events_per_wall_s'):>10.0f} {med('totals_cpu_s'):>13.3f}")
    (RESULTS / "emulator_meter_events.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
