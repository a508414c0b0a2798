"""
Settle: what Stripe answered for each row a run sent becomes the row's status.

The last step of a reporting run (targets, totals, ledger, send, settle). A row is
`sent` when Stripe took its event, `failed` when Stripe refused it for certain, and
stays `pending` when the outcome is unknown (the next run resends it under the same
identifier, which Stripe deduplicates). The ledger writes the statuses in bulk, one
statement per distinct outcome; then a row Stripe took after its period's invoice was
final is accounted as billed on no invoice (carried to the customer's next period).
"""

from ..models import UsageReport
from . import invoices, ledger


def settle_sent(results: dict, reports: list[UsageReport]) -> None:
    """Record Stripe's answer (by report pk) on each sent row, then account late ones."""
    ledger.settle(results, reports)
    invoices.account_rows(r for r in reports if r.status == UsageReport.Status.SENT)
