"""
Gunicorn's configuration for Epsilon Billing's web process (`make serve`, the
Procfile's `web`, the systemd unit). Every value comes from the environment, with the
defaults a small production host wants.
"""

import multiprocessing
import os
from pathlib import Path

import environ

# The same .env beside manage.py that Django's settings read (the process's own
# environment wins), so PORT, HOST and WEB_CONCURRENCY can live there too.
environ.Env.read_env(Path(__file__).resolve().parent.parent / ".env", overwrite=False)

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Web requests are short (the admin, webhooks, ingest); reporting runs in qcluster.
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8)))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# The scheme (https) is taken from X-Forwarded-Proto only from these addresses: the
# TLS-terminating proxy's. Django trusts what gunicorn decided, never the raw header.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Heartbeat files in memory, not on a possibly slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
wsgi_app = "epsilon.wsgi:application"


def on_starting(server):
    """Prometheus' multiprocess mode: start from an empty directory (old pids' files would count)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def child_exit(server, worker):
    """Prometheus' multiprocess mode: forget a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
