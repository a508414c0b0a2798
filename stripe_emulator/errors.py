"""Stripe-shaped errors.

Handlers raise these; the pipeline turns them into Stripe's error JSON
(`{"error": {"type", "code", "message", "param", "doc_url", "request_log_url"}}`)
with the matching HTTP status. Keys with no value are left out, as Stripe does.
"""

from __future__ import annotations

from typing import Optional


def doc_url(code: str) -> str:
    return "https://stripe.com/docs/error-codes/" + code.replace("_", "-")


class StripeError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        param: Optional[str] = None,
        status: Optional[int] = None,
        type: Optional[str] = None,
        headers: Optional[dict] = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        # Extra response headers, e.g. Stripe-Should-Retry: false.
        self.headers = dict(headers or {})

    def body(self, request_log_url: Optional[str] = None) -> dict:
        err = {"message": self.message, "type": self.type}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = doc_url(self.code)
        if self.param:
            err["param"] = self.param
        if request_log_url:
            err["request_log_url"] = request_log_url
        return {"error": err}


class InvalidRequest(StripeError):
    pass


class AuthenticationError(StripeError):
    status = 401


class NotFound(StripeError):
    status = 404


class IdempotencyError(StripeError):
    type = "idempotency_error"


class ApiError(StripeError):
    status = 500
    type = "api_error"


# --- the common cases, worded as Stripe words them ---------------------------


def missing_param(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def unknown_param(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Received unknown parameter: {param}", code="parameter_unknown", param=param
    )


def invalid_integer(param: str, value) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
    )


def invalid_param(param: str, message: str, code: Optional[str] = None) -> InvalidRequest:
    return InvalidRequest(message, code=code, param=param)


def no_such(kind: str, obj_id: str, param: str = "id", hint: str = "") -> NotFound:
    return NotFound(
        f"No such {kind}: '{obj_id}'{hint}", code="resource_missing", param=param
    )


def unrecognized_url(method: str, path: str) -> NotFound:
    return NotFound(
        f"Unrecognized request URL ({method}: {path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/."
    )
