"""The links a chunk's codes name, read once per ``batch_memo`` block (issue 15: ``links_for_codes_read_ahead``):
``link_for_code`` then answers them (and an unknown code) without a read, each time with a copy of its own;
another workspace's code stays unknown; outside a block nothing is read ahead and every call reads."""

from __future__ import annotations

import pytest

from referral_platform.tenancy.memo import batch_memo
from referrals.selectors import link_for_code, links_for_codes_read_ahead

from .builders import program_for, referrer_with_link

pytestmark = pytest.mark.django_db


@pytest.fixture
def links(world):
    program = program_for(world.a)
    _dana, dana = referrer_with_link(program, code="dana-a")
    _ravi, ravi = referrer_with_link(program, name="Ravi Menon", code="ravi-a")
    _theirs, theirs = referrer_with_link(program_for(world.b), name="Bo Other", code="theirs-b")
    return dana, ravi, theirs


def _shape(link):
    return link and (link.pk, link.tenant_id, link.participant.pk, link.participant.name, link.program.pk, link.code)


def test_inside_a_block_the_codes_links_are_read_once_and_answer_as_a_read_would(
    world, links, django_assert_num_queries
):
    dana, ravi, theirs = links
    asked = [" dana-a ", "ravi-a", "no-such-code", theirs.code, ""]
    alone = [_shape(link_for_code(world.a, code)) for code in asked]
    assert alone == [_shape(dana), _shape(ravi), None, None, None]

    with batch_memo():
        with django_assert_num_queries(1):
            links_for_codes_read_ahead(world.a, asked)
            read_ahead = [_shape(link_for_code(world.a, code)) for code in asked]
            links_for_codes_read_ahead(world.a, ["dana-a", "ravi-a"])  # already known: nothing read
        assert read_ahead == alone
        # Another workspace asking for its own code is not answered from workspace A's block entries.
        with django_assert_num_queries(1):
            assert _shape(link_for_code(world.b, theirs.code)) == _shape(theirs)
        # A code nobody read ahead is read as usual.
        with django_assert_num_queries(1):
            assert link_for_code(world.a, "later-code") is None


def test_each_answer_is_a_copy_of_its_own(world, links):
    dana, _ravi, _theirs = links
    with batch_memo():
        links_for_codes_read_ahead(world.a, ["dana-a"])
        first = link_for_code(world.a, "dana-a")
        first.participant.name = "changed by one event's processing"
        first.program.name = "changed too"
        first.is_active = False
        second = link_for_code(world.a, "dana-a")
    assert second is not first and second.participant is not first.participant
    assert (second.participant.name, second.program.name, second.is_active) == (
        dana.participant.name,
        dana.program.name,
        True,
    )


def test_outside_a_block_nothing_is_read_ahead(world, links, django_assert_num_queries):
    with django_assert_num_queries(0):
        links_for_codes_read_ahead(world.a, ["dana-a", "ravi-a"])
    with django_assert_num_queries(2):
        assert link_for_code(world.a, "dana-a").code == "dana-a"
        assert link_for_code(world.a, "dana-a").code == "dana-a"
