"""seed_demo gives every demo program double-sided rules in at least two versions, and previewable payments."""

from io import StringIO

import pytest
from django.core.management import call_command

from programs import selectors
from programs.models import Program
from programs.rules import has_rewards, parse_rules
from referrals.models import Referral
from rewards import preview as preview_module


@pytest.mark.django_db
def test_seed_demo_programs_have_two_versions_of_double_sided_rules():
    call_command("seed_demo", clicks=20, stdout=StringIO())
    versions_after_first_run = {p.pk: p.versions.count() for p in Program.objects.all()}
    call_command("seed_demo", clicks=20, stdout=StringIO())

    programs = list(Program.objects.select_related("tenant"))
    assert len(programs) == 4
    for program in programs:
        assert program.versions.count() == versions_after_first_run[program.pk]  # idempotent
        rewarded = [v for v in program.versions.order_by("number") if has_rewards(v.rules)]
        assert len(rewarded) >= 2, program
        current = parse_rules(selectors.program_latest_version(program).rules)
        assert current.referrer and current.referred, program
        used = set(Referral.objects.filter(program=program).values_list("rule_version__number", flat=True))
        assert len(used) >= 2 and None not in used, (program, used)
    acme_customers = Program.objects.get(tenant__slug="acme", slug="customers")
    preview = preview_module.rules_change_preview(
        acme_customers.tenant,
        program=acme_customers,
        proposed_rules=selectors.program_latest_version(acme_customers).rules,
    )
    assert preview.conversions >= 1 and preview.new_total_minor > 0
