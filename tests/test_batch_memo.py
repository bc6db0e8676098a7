"""Rows a batch reads once per chunk (referral_platform/tenancy/memo.py, issue 15): a program's current rules
version and its fraud policy are read once inside a ``batch_memo`` block and every time outside one; a row
the block created is not kept (its savepoint may still roll back); the next block reads again, so a change
counts from the next chunk on; one workspace's rows never answer for another's."""

from __future__ import annotations

import pytest
from django.db import transaction

from programs.services import program_current_version, program_rules_change
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.memo import batch_memo
from referrals.fraud_services import fraud_policy_get_or_create
from referrals.models import FraudPolicy
from rewards.tests.pipeline import program_with_rules, rules_doc
from tests import factories as f

pytestmark = pytest.mark.django_db

RULES = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])
MORE = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 7_000}])


def test_a_programs_current_version_is_read_once_per_block_and_a_new_one_counts_from_the_next(
    world, django_assert_num_queries
):
    program = program_with_rules(world.a, RULES)
    with django_assert_num_queries(2):  # outside a block: every call reads
        first = program_current_version(program=program)
        assert program_current_version(program=program) == first
    with batch_memo():
        with django_assert_num_queries(1):
            assert program_current_version(program=program) == first
            assert program_current_version(program=program) == first
        program_rules_change(program=program, actor=system_actor(world.a), rules=MORE)
        with django_assert_num_queries(0):  # within the chunk: as if it had run a moment earlier
            assert program_current_version(program=program) == first
    with batch_memo():
        assert program_current_version(program=program).number == first.number + 1


def test_a_fraud_policy_is_read_once_per_block_but_one_just_created_is_read_again(world, django_assert_num_queries):
    program, other = f.ProgramFactory(tenant=world.a), f.ProgramFactory(tenant=world.b)
    with batch_memo():
        try:
            with transaction.atomic():
                created = fraud_policy_get_or_create(program=program)  # created in a savepoint ...
                raise RuntimeError("... that rolls back")
        except RuntimeError:
            pass
        assert not FraudPolicy.objects.filter(pk=created.pk).exists()
        again = fraud_policy_get_or_create(program=program)  # not the rolled-back row: created anew
        assert FraudPolicy.objects.filter(pk=again.pk).exists()
        with django_assert_num_queries(1):  # read once (it exists now), then remembered
            assert fraud_policy_get_or_create(program=program) == again
            assert fraud_policy_get_or_create(program=program) == again
        # Another workspace's program has its own policy, never this one.
        theirs = fraud_policy_get_or_create(program=other)
        assert theirs.tenant_id == world.b.pk and theirs != again
