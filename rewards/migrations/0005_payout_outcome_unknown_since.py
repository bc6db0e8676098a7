"""Payout.outcome_unknown_since: when an attempt's answer from Stripe never arrived.

Payouts already attempted and not paid may have had such an attempt (nothing recorded it before this
field): they are marked unknown since their creation, so their next attempt after Stripe's idempotency
window looks the object up at Stripe first. A lookup that finds nothing costs one request.
"""

from django.db import migrations, models
from django.db.models import F


def mark_attempted_unpaid_payouts_unknown(apps, schema_editor):
    Payout = apps.get_model("rewards", "Payout")
    Payout.objects.filter(status__in=["processing", "failed", "abandoned"], attempts__gt=0).update(
        outcome_unknown_since=F("created_at")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("rewards", "0004_reward_slots"),
    ]

    operations = [
        migrations.AddField(
            model_name="payout",
            name="outcome_unknown_since",
            field=models.DateTimeField(
                blank=True,
                help_text=(
                    "Start of the earliest Stripe attempt whose answer never arrived (crash, timeout, dropped "
                    "connection, server error); cleared by a definite answer. Stripe forgets idempotency keys "
                    "after about a day, so an older unknown attempt is looked up at Stripe before the next one."
                ),
                null=True,
            ),
        ),
        migrations.RunPython(mark_attempted_unpaid_payouts_unknown, migrations.RunPython.noop),
    ]
