"""The request pipeline's stages.

A middleware is `fn(ctx, call_next) -> ApiResponse`. It may act before
calling `call_next()`, after it, or instead of it. The default chain, outermost
first, is:

    log -> fault_stats -> errors -> params -> auth -> version -> fault_limits
        -> fault_inject -> idempotency -> fault_after -> [hooks] -> dispatch

The fault_* stages (faults/) do nothing until configured: rate limits and
injected 429s answer before idempotency (never stored, as on Stripe), injected
500s and lost responses from inside it (stored and replayed for v1, as
Stripe's idempotency layer does), latency outside the store transaction, so
that it does not block other requests. More stages go where `[hooks]` is,
via `EmulatorApp.use(fn, name=..., before=/after=...)`.

/v2 requests take JSON bodies and answer v2-shaped errors
(`{"error": {"type", "code", "message", "doc_url"}}`); the v2 meter event
stream authenticates with a meter event session token instead of a key.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
import traceback
from typing import Callable

from . import errors, forms, jsonutil
from .context import DEFAULT_API_VERSION, ApiResponse, Ctx
from .errors import AuthenticationError, InvalidRequest, StripeError

Middleware = Callable[[Ctx, Callable[[], ApiResponse]], ApiResponse]

KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{24,}$")
VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
IDEMPOTENCY_WINDOW = 24 * 3600


def request_log_url(ctx: Ctx) -> str:
    return f"{ctx.base_url}/_emulator/requests/{ctx.request_id}"


def mask_key(key: str) -> str:
    m = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)", key)
    prefix = m.group(1) if m else ""
    return f"{prefix}****{key[-4:]}" if len(key) >= 4 else "****"


# --- log -------------------------------------------------------------------


def log(ctx: Ctx, call_next) -> ApiResponse:
    started = time.monotonic()
    resp = call_next()
    err = resp.body.get("error") if isinstance(resp.body, dict) else None
    if err is None and isinstance(resp.body, str) and resp.status >= 400:
        err = json.loads(resp.body).get("error")
    ctx.store.log_request({
        "id": ctx.request_id,
        "time": ctx.store.now(),
        "method": ctx.method,
        "path": ctx.path,
        "query": ctx.query_params,
        **_logged_body(ctx),
        "status": resp.status,
        "idempotency_key": ctx.idempotency_key,
        "idempotent_replayed": ctx.idempotent_replayed,
        "fault": ctx.notes.get("fault"),
        "dropped": bool(ctx.notes.get("dropped")),
        "api_key": mask_key(ctx.api_key) if ctx.api_key else None,
        "livemode": ctx.livemode,
        "stripe_version": ctx.stripe_version,
        "route": ctx.route.name if ctx.route else None,
        "ignored_params": ctx.unused_params() if ctx.route and resp.status < 400 else [],
        "error": ({k: err.get(k) for k in ("type", "code", "message", "param")}
                  if err else None),
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
    })
    if ctx.app.verbose:
        print(f"{ctx.method} {ctx.path} -> {resp.status} ({ctx.request_id})",
              file=sys.stderr, flush=True)
    return resp


def _logged_body(ctx: Ctx) -> dict:
    """`body` and `params` for the request log. A JSON body (v2) is kept as the text
    it arrived as and parsed again when the log is read (Store.requests): a stream
    call's 100 events as Python objects are ~240 KB, held for the log's 10,000
    entries, and walked by every full garbage collection; as text they are ~15 KB."""
    if ctx.path.startswith("/v2/") and ctx.body_params:
        return {"body_json": ctx.request.get_data(as_text=True)}
    return {"body": ctx.body_params, "params": ctx.params}


# --- errors ----------------------------------------------------------------


def error_response(ctx: Ctx, e: StripeError) -> ApiResponse:
    """The JSON answer for an error: v1's shape, or v2's on /v2 paths."""
    if ctx.path.startswith("/v2/"):
        err = {"type": e.type, "code": e.code or e.type, "message": e.message}
        if e.code:
            err["doc_url"] = errors.doc_url(e.code)
        if e.param:
            err["param"] = e.param
        return ApiResponse(e.status, {"error": err}, dict(e.headers))
    return ApiResponse(e.status, e.body(request_log_url(ctx)), dict(e.headers))


def errors_to_json(ctx: Ctx, call_next) -> ApiResponse:
    try:
        resp = call_next()
    except StripeError as e:
        resp = error_response(ctx, e)
    except Exception as e:  # a bug in the emulator: say so, Stripe-style
        traceback.print_exc()
        resp = error_response(ctx, errors.ApiError(
            f"The local Stripe emulator failed to handle this request: {type(e).__name__}: {e}",
            headers={"Stripe-Should-Retry": "false"}))
    resp.headers.setdefault("Request-Id", ctx.request_id)
    resp.headers.setdefault("Stripe-Version", ctx.stripe_version)
    return resp


# --- params ----------------------------------------------------------------


def parse_params(ctx: Ctx, call_next) -> ApiResponse:
    req = ctx.request
    ctx.query_params = forms.decode(req.query_string.decode("utf-8", "replace"))
    body = {}
    if ctx.method in ("POST", "DELETE"):
        ctype = (req.mimetype or "").lower()
        raw = req.get_data(as_text=True)
        if ctx.path.startswith("/v2/"):
            body = _v2_body(raw, ctype)
        elif raw:
            if ctype == "application/json":
                raise InvalidRequest(
                    "Invalid request: the v1 API takes application/x-www-form-urlencoded "
                    "bodies, not JSON.")
            body = forms.decode(raw)
    ctx.body_params = body
    ctx.params = {**ctx.query_params, **body}
    return call_next()


def _v2_body(raw: str, ctype: str) -> dict:
    if not raw.strip():
        return {}
    if ctype != "application/json":
        raise InvalidRequest("Invalid request: the v2 API takes application/json bodies.")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise InvalidRequest(f"Invalid JSON body: {e}")
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request: the JSON body must be an object.")
    return body


# --- auth ------------------------------------------------------------------


def _presented_key(ctx: Ctx):
    header = ctx.request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip()
    auth = ctx.request.authorization  # HTTP basic: the key is the username
    if auth is not None and auth.type == "basic":
        return auth.username or ""
    return None


def authenticate(ctx: Ctx, call_next) -> ApiResponse:
    key = _presented_key(ctx)
    if key and ctx.path.rstrip("/") == METER_EVENT_STREAM:
        return _authenticate_session(ctx, key, call_next)
    if not key:
        raise AuthenticationError(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
            "or we can help at https://support.stripe.com/.",
            headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
    if not KEY_RE.match(key):
        raise AuthenticationError(f"Invalid API Key provided: {mask_key(key)}",
                                  headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
    if key in ctx.app.revoked_keys:
        raise AuthenticationError(
            f"Expired API Key provided: {mask_key(key)}. Application access may have been revoked.",
            code="api_key_expired")
    ctx.api_key = key
    ctx.livemode = key.split("_")[1] == "live"
    return call_next()


METER_EVENT_STREAM = "/v2/billing/meter_event_stream"


def _authenticate_session(ctx: Ctx, token: str, call_next) -> ApiResponse:
    """The v2 meter event stream takes a meter event session's token, not a key."""
    from .resources import meter_event_stream

    if KEY_RE.match(token):
        raise AuthenticationError(
            "The meter event stream authenticates with a meter event session's "
            "authentication_token (POST /v2/billing/meter_event_session), not an API key.")
    session = meter_event_stream.find_session(ctx.store, token)
    if session is None:
        raise AuthenticationError(f"Invalid authentication token provided: {mask_key(token)}")
    if ctx.store.now() >= session["expires_at"]:
        raise StripeError("The temporary session token has expired.",
                          code="billing_meter_event_session_expired",
                          type="temporary_session_expired", status=401)
    ctx.api_key = token
    ctx.livemode = bool(session["livemode"])
    ctx.notes["meter_event_session"] = session["id"]
    return call_next()


# --- version and account -----------------------------------------------------


def version_and_account(ctx: Ctx, call_next) -> ApiResponse:
    version = ctx.request.headers.get("Stripe-Version")
    if version:
        if not VERSION_RE.match(version):
            raise InvalidRequest(f"Invalid Stripe API version: {version}")
        ctx.stripe_version = version
    else:
        ctx.stripe_version = DEFAULT_API_VERSION
    account = ctx.request.headers.get("Stripe-Account")
    if account and account != ctx.app.account_id:
        raise StripeError(
            f"The provided key '{mask_key(ctx.api_key)}' does not have access to account "
            f"'{account}' (or that account does not exist). Application access may have been "
            "revoked.", code="account_invalid", status=403)
    return call_next()


# --- idempotency -------------------------------------------------------------


class Idempotency:
    """Stripe's Idempotency-Key semantics for POSTs.

    Same key and same params within 24h: the first response is replayed with
    `Idempotent-Replayed: true`. Same key, different params: 400
    idempotency_error. Same key while the first is still running: 409.
    Like Stripe, only responses from requests that ran are stored: 2xx and
    5xx, not 4xx validation failures (those can be retried with the key).
    """

    def __init__(self):
        self._inflight = set()
        self._lock = threading.Lock()

    def __call__(self, ctx: Ctx, call_next) -> ApiResponse:
        key = ctx.idempotency_key
        if ctx.method != "POST" or not key:
            return call_next()
        if len(key) > 255:
            raise InvalidRequest("Invalid idempotency key: must be at most 255 characters.",
                                 param="Idempotency-Key")
        scope = "live" if ctx.livemode else "test"
        fingerprint = hashlib.sha256(json.dumps(
            {"method": ctx.method, "path": ctx.path, "params": ctx.params},
            sort_keys=True).encode()).hexdigest()
        with self._lock:
            if (scope, key) in self._inflight:
                raise StripeError(
                    "There is currently another in-progress request using this Idempotent Key "
                    "(that probably means you submitted twice, and the other request is still "
                    f"going through): {key}. Please try again later.",
                    code="idempotency_key_in_use", status=409)
            stored = ctx.store.idempotent_result(scope, key, ctx.store.now() - IDEMPOTENCY_WINDOW)
            if stored is None:
                self._inflight.add((scope, key))
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                raise errors.IdempotencyError(
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.")
            ctx.idempotent_replayed = True
            headers = dict(stored["headers"])
            headers.update({"Idempotent-Replayed": "true", "Original-Request": stored["request_id"],
                            "Idempotency-Key": key})
            return ApiResponse(stored["status"], stored["body"], headers)
        # v1 keeps 5xx answers too (Stripe replays them); a v2 retry of a failed
        # request runs again, so v2 keeps only successes.
        keep_5xx = not ctx.path.startswith("/v2/")
        try:
            resp = call_next()
            if resp.status < 400 or (keep_5xx and resp.status >= 500):
                body = resp.body if isinstance(resp.body, str) else jsonutil.dumps(resp.body)
                keep = {k: v for k, v in resp.headers.items()
                        if k.lower() not in ("request-id", "stripe-version")}
                ctx.store.save_idempotent_result(scope, key, fingerprint, ctx.request_id,
                                                 resp.status, body, keep)
            resp.headers["Idempotency-Key"] = key
            return resp
        finally:
            with self._lock:
                self._inflight.discard((scope, key))


# --- dispatch (the innermost stage) -------------------------------------------


def dispatch(ctx: Ctx) -> ApiResponse:
    from . import expand

    found = ctx.app.router.match(ctx.method, ctx.path)
    if found is None:
        raise errors.unrecognized_url(ctx.method, ctx.path)
    ctx.route, ctx.view_args = found
    for name in ctx.params:
        if name not in ctx.route.params:
            raise errors.unknown_param(name)
    with ctx.store.transaction():
        result = ctx.route.handler(ctx, **ctx.view_args)
        if isinstance(result, ApiResponse):
            return result
        paths = ctx.expand()
        if paths:
            expand.apply(ctx, result, paths)
    return ApiResponse(200, result)
