"""The Stripe emulator in its own process, with latency on meter event calls (for benchmarks)."""

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stripe_emulator.server import EmulatorServer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    # Latency on meter event calls only (v1 and the v2 stream): setup stays fast.
    server = EmulatorServer(port=args.port, latency_ms=args.latency_ms)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
