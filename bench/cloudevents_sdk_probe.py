"""
Would the CloudEvents Python SDK keep ingest's rate? 20,000 events of one batch body:
the embedded meter's own parse and validation (every check) against the SDK's envelope
alone (which would still need the meter's checks after it). The SDK is not a dependency
of the app; install it beside, not into the venv:

    .venv/bin/pip install --target var/bench/cloudevents-sdk --no-deps cloudevents==2.2.0
    .venv/bin/python bench/cloudevents_sdk_probe.py var/bench/cloudevents-sdk

(python-dateutil, its one dependency, is in the venv already.)
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else "var/bench/cloudevents-sdk")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "epsilon.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "cloudevents-sdk-probe")
import django  # noqa: E402

django.setup()
from cloudevents.core.formats.json import JSONFormat  # noqa: E402
from cloudevents.core.v1.event import CloudEvent  # noqa: E402
from dateutil.parser import isoparse  # noqa: E402
from django.utils import timezone  # noqa: E402

from embedded_meter import services, validation  # noqa: E402
from embedded_meter.models import MeterDefinition  # noqa: E402

meters = [MeterDefinition.from_openmeter({"slug": "m1", "eventType": "epsilon.execution", "aggregation": "SUM", "valueProperty": "$.billed_seconds", "windowSize": "MINUTE"})]
events = [{"specversion": "1.0", "id": f"p-{k}", "source": "prof", "type": "epsilon.execution",
        "subject": f"cus_{k % 500}", "time": f"2026-11-01T10:{k%60:02d}:{k%60:02d}Z", "datacontenttype": "application/json",
        "data": {"duration_ms": 1000 + k, "billed_seconds": 1 + k % 5, "function": "f"}} for k in range(20000)]
body = json.dumps(events).encode()
singles = [json.dumps(e).encode() for e in events]
fmt = JSONFormat()
now = timezone.now()
def sdk_batch():  # the SDK has no batch reader: each array element through its v1 event factory
    out = []
    for raw in json.loads(body):
        attrs = dict(raw); data = attrs.pop("data", None)
        if "time" in attrs: attrs["time"] = isoparse(attrs["time"])
        out.append(CloudEvent(attrs, data))
    return out
cases = {
    "hand-written: parse_body + validate_events (all checks)": lambda: validation.validate_events(services.parse_body(body, "application/cloudevents-batch+json")[0], meters, now, batch=True),
    "SDK: batch elements through CloudEvent(attributes, data)": sdk_batch,
    "SDK: JSONFormat().read per event (structured mode)": lambda: [fmt.read(None, s) for s in singles],
}
for name, fn in cases.items():
    rates = []
    for _ in range(5):
        t = time.perf_counter(); fn(); rates.append(20000 / (time.perf_counter() - t))
    rates.sort()
    print(f"{name}: {rates[2]:,.0f} events/s (median of 5; runs {', '.join(f'{r:,.0f}' for r in rates)})")
print("load average", os.getloadavg())
