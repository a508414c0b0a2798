"""
What every meter API view shares, as decorators: CSRF exemption (the API is
token-authenticated, so a browser's cookies grant nothing), the method check (405
problem with Allow), the Bearer token (401 problem), the meter in the path (400 or 404
problem), and Problem exceptions, and any other error, answered as problem+json.
Nothing under /api/v1/ answers HTML.
"""

import hmac
import re
from functools import wraps

from django.conf import settings
from django.core import signals
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from . import definitions
from .responses import Problem, from_problem, problem

# getMeter's meterIdOrSlug: a slug or a ULID (meters have no ULIDs here: 404).
METER_ID_OR_SLUG = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*|[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")


def _check_token(request) -> None:
    token = getattr(settings, "EMBEDDED_METER_INGEST_TOKEN", "")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # No token configured means nobody gets in, never everybody.
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return
    raise Problem(
        401,
        "Send the embedded meter's token as 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": 'Bearer realm="embedded-meter"'},
    )


def api_endpoint(*methods: str, unsupported: dict[str, str] | None = None, token: bool = True):
    """
    The view answers `methods` (any method if none); any other method is a 405 problem
    naming what is allowed, with `unsupported[method]` as its detail where the OpenAPI
    document has an operation the embedded meter deliberately lacks (e.g. createMeter).
    `token=False` skips the Bearer check.
    """
    allow = ", ".join(methods)

    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if methods and request.method not in methods:
                    detail = (unsupported or {}).get(request.method, f"Use {allow}.")
                    raise Problem(405, detail, headers={"Allow": allow})
                if token:
                    _check_token(request)
                return view(request, *args, **kwargs)
            except Problem as exc:
                return from_problem(request, exc)
            except Exception as exc:
                if settings.DEBUG:
                    raise  # Django's technical page, for the developer
                # What Django does for an uncaught exception (the signal, the django.request
                # log), but answered as the problem the OpenAPI document promises.
                signals.got_request_exception.send(sender=None, request=request)
                response = problem(request, 500, "The embedded meter failed to answer; the error is logged.")
                log_response("Internal Server Error: %s", request.path, response=response, request=request, exception=exc)
                return response

        return wrapper

    return decorate


def with_meter(view):
    """Resolves the path's meterIdOrSlug to the meter, passed as `meter`, or a 400/404 problem."""

    @wraps(view)
    def wrapper(request, slug, *args, **kwargs):
        if len(slug) > 64 or not METER_ID_OR_SLUG.fullmatch(slug):
            raise Problem(400, f"meterIdOrSlug: must be a meter slug (lowercase letters, digits, single underscores) or ID, got {slug!r}", field="meterIdOrSlug")
        meter = definitions.get_meter(slug)
        if meter is None:
            raise Problem(404, f"No meter {slug!r}.")
        return view(request, *args, meter=meter, **kwargs)

    return wrapper
