"""The emulator's one account: GET /v1/account and GET /v1/accounts/{id}.

dj-stripe calls GET /v1/account to learn whose keys it holds; the id is
stable (ids.ACCOUNT_ID) so data synced in one run matches the next.
"""

from __future__ import annotations

from .. import errors, fixtures
from ..routing import route

# A fixed creation time, so the account object is identical across runs.
ACCOUNT_CREATED = 1767225600  # 2026-01-01T00:00:00Z


def account_object(ctx) -> dict:
    acct = fixtures.template("account")
    settings = fixtures.shape("account")["settings"]
    settings["dashboard"] = {"display_name": "Local Stripe emulator", "timezone": "Etc/UTC"}
    settings["payouts"]["statement_descriptor"] = None
    acct.update({
        "id": ctx.app.account_id,
        "created": ACCOUNT_CREATED,
        "settings": settings,
        "external_accounts": {"data": [], "has_more": False, "object": "list",
                              "url": f"/v1/accounts/{ctx.app.account_id}/external_accounts"},
    })
    return acct


@route("/v1/account", ["GET"])
def retrieve_own(ctx):
    return account_object(ctx)


@route("/v1/accounts/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    if obj_id != ctx.app.account_id:
        raise errors.no_such("account", obj_id)
    return account_object(ctx)


@route("/v2/core/accounts", ["GET"], ("applied_configurations", "closed", "include", "limit",
                                      "page"))
def list_v2_accounts(ctx):
    # dj-stripe's sync lists v2 (connected) accounts next to GET /v1/account.
    # The emulator has no connected accounts: an empty v2 list page.
    return {"data": [], "next_page_url": None, "previous_page_url": None}
