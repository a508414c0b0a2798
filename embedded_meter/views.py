"""
The OpenMeter-compatible HTTP API, mounted at /api/v1/: ingestEvents (POST /events),
listMeters (GET /meters), getMeter (GET /meters/{slug}), queryMeter and queryMeterPost
(GET and POST /meters/{slug}/query), as /work/shared/openmeter/openapi.yaml defines
them. Thin: methods, the Bearer token (EMBEDDED_METER_INGEST_TOKEN) and the meter in
the path are checked by decorators.py, parameters by forms.py, answers are shaped by
responses.py, the work is in services.py and selectors.py.

Invariants: token-authenticated, hence CSRF-exempt; every error is problem+json, the
operations the embedded meter lacks included (405, or 404 off its paths), never HTML.
"""

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone

from . import definitions, selectors, services
from .decorators import api_endpoint, with_meter
from .forms import MeterListForm, MeterQueryForm
from .responses import Problem, no_content, query_result

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFINE_METERS = "define meters in the admin (Embedded meter > Meter definitions) or in EMBEDDED_METERS"


@api_endpoint("POST", unsupported={"GET": "Listing events (listEvents) is not supported by the embedded meter; ingest with POST."})
def events(request):
    limit = getattr(settings, "EMBEDDED_METER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    # request.read(), not request.body: large batches are the point, so this endpoint
    # has its own limit instead of DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
    body = request.read(limit + 1)
    if len(body) > limit:
        raise Problem(413, f"The body is larger than {limit} bytes; send smaller batches.")
    try:
        raw_events, batch = services.parse_body(body, request.META.get("CONTENT_TYPE", ""))
        services.ingest_events(raw_events, batch=batch)
    except services.IngestError as exc:
        extensions = {"field": exc.field}
        if exc.index is not None:
            extensions["index"] = exc.index
        if exc.errors:
            extensions["errors"] = [e.as_json() for e in exc.errors[:100]]
        raise Problem(400, exc.detail, **extensions) from None
    return no_content()


@api_endpoint("GET", unsupported={"POST": f"Creating meters (createMeter) is not supported by the embedded meter: {DEFINE_METERS}."})
def meters(request):
    listing = MeterListForm(MeterListForm.query_data(request.GET)).listing()
    return JsonResponse([m.to_openmeter() for m in definitions.list_meters(**listing)], safe=False)


@api_endpoint(
    "GET",
    unsupported={
        "PUT": f"Updating meters (updateMeter) is not supported by the embedded meter: {DEFINE_METERS}.",
        "DELETE": f"Deleting meters (deleteMeter) is not supported by the embedded meter: {DEFINE_METERS}.",
    },
)
@with_meter
def meter_detail(request, meter):
    return JsonResponse(meter.to_openmeter())


@api_endpoint("GET", "POST")
@with_meter
def meter_query(request, meter):
    q = MeterQueryForm.from_request(request, meter).query()
    result = selectors.meter_query(meter, q, timezone.now())
    return query_result(request, meter, result, q.group_by)


@api_endpoint(token=False)  # nothing to protect: the paths are public knowledge
def not_found(request, rest):
    raise Problem(
        404,
        f"No such path in the embedded meter, which implements ingestEvents (POST /api/v1/events), listMeters, "
        f"getMeter, queryMeter and queryMeterPost (/api/v1/meters...); got {request.path!r}.",
    )
