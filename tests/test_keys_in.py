"""``keys_in`` (referral_platform.db.sql, issue 15): a filter of rows by a list of composite keys, ``(a, b) IN
((…), …)``, used instead of an OR of one ``Q`` per key where a chunk's messages, referred companies and opted-out
addresses are read. It finds exactly the rows the OR of ``Q``s finds, whatever the keys (duplicates, quotes,
backslashes, any text, none at all), and, combined with a workspace's filter, never another workspace's row."""

from __future__ import annotations

import pytest
from django.db.models import Q
from hypothesis import given
from hypothesis import strategies as st

from programs.mailing import emails_opted_out
from programs.models import EmailOptOut, Participant
from referral_platform.db.sql import keys_in
from tests import factories as f
from tests.hypothesis_db import database_examples

ADDRESSES = ["a@x.example", "b@x.example", "o'brien@x.example", "back\\slash@x.example", "ünï@x.example"]


def _or_of_qs(keys):
    condition = Q(pk__in=[])
    for tenant_id, email in keys:
        condition |= Q(tenant_id=tenant_id, email=email)
    return condition


@pytest.mark.django_db
@database_examples(40)
@given(
    stored=st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(ADDRESSES)), unique=True, max_size=8),
    asked=st.lists(
        st.tuples(
            st.sampled_from("abz"),
            st.one_of(st.sampled_from(ADDRESSES), st.text(st.characters(blacklist_characters="\x00"), max_size=12)),
        ),
        max_size=12,
    ),
)
def test_the_rows_are_those_the_or_of_one_q_per_key_finds(world, stored, asked):
    tenants = {"a": world.a.pk, "b": world.b.pk, "z": 0}
    EmailOptOut.objects.all().delete()
    EmailOptOut.objects.bulk_create(EmailOptOut(tenant_id=tenants[t], email=email) for t, email in stored)
    keys = [(tenants[t], email) for t, email in asked]

    found = set(EmailOptOut.objects.filter(keys_in(EmailOptOut, ("tenant", "email"), keys)).values_list("pk"))
    expected = set(EmailOptOut.objects.filter(_or_of_qs(keys)).values_list("pk"))

    assert found == expected
    assert emails_opted_out(set(keys)) == {
        (tenant, email) for tenant, email in keys if (tenant, email) in {(tenants[t], e) for t, e in stored}
    }


@pytest.mark.django_db
def test_a_workspace_filter_keeps_another_workspace_s_rows_out(world):
    mine = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), external_id="cus_1", email="x@a.example")
    theirs = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b), external_id="cus_1", email="x@a.example")
    keys = [(mine.program_id, "cus_1"), (theirs.program_id, "cus_1")]

    rows = Participant.objects.for_tenant(world.a.pk).filter(keys_in(Participant, ("program", "external_id"), keys))

    assert list(rows) == [mine]
    either = Q(keys_in(Participant, ("program", "external_id"), [])) | Q(
        keys_in(Participant, ("program", "email"), [(theirs.program_id, "x@a.example")])
    )
    assert list(Participant.objects.filter(either)) == [theirs]  # no key matches nothing; the other arm still reads


def test_a_key_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="a key of 1 values for 2 fields"):
        keys_in(EmailOptOut, ("tenant", "email"), [(1,)])
