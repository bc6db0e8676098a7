"""A conversion's identity links recorded and its identity walk started by ONE statement
(``identity_link_and_cluster``, issue 15): the same cluster as ``identity_link`` then ``identity_cluster``,
whatever the graph — truncated walks and levels cut at their limit included — and never another workspace's
links."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from referrals import selectors
from referrals.models import IdentityKind, IdentityLink
from referrals.selectors import identity_cluster
from referrals.services import identity_link
from referrals.services.identity import identity_link_and_cluster
from tests import factories as f
from tests.hypothesis_db import database_examples

KINDS = (IdentityKind.VISITOR, IdentityKind.EMAIL, IdentityKind.CUSTOMER)


def value(kind: str, number: int) -> str:
    return f"p{number}@people.example" if kind == IdentityKind.EMAIL else f"{kind[:3]}-{number}"


def graph(tenant, nodes: int, edges) -> None:
    for a, b in sorted({tuple(sorted((a % nodes, b % nodes))) for a, b in edges if a % nodes != b % nodes}):
        f.IdentityLinkFactory(
            tenant=tenant,
            a_kind=KINDS[a % 3],
            a_value=value(KINDS[a % 3], a),
            b_kind=KINDS[b % 3],
            b_value=value(KINDS[b % 3], b),
        )


def identifiers(numbers) -> dict:
    out = {"visitor_id": "", "email": "", "customer_external_id": ""}
    names = {
        IdentityKind.VISITOR: "visitor_id",
        IdentityKind.EMAIL: "email",
        IdentityKind.CUSTOMER: "customer_external_id",
    }
    for number in numbers:
        out[names[KINDS[number % 3]]] = value(KINDS[number % 3], number)
    return out


def links_of(tenant) -> list[tuple]:
    return sorted(IdentityLink.objects.filter(tenant=tenant).values_list("a_kind", "a_value", "b_kind", "b_value"))


@pytest.mark.django_db
@database_examples(25)
@given(
    nodes=st.integers(min_value=3, max_value=24),
    edges=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 23)), max_size=40),
    event=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    max_nodes=st.sampled_from([1, 2, 5, 200]),  # small caps: truncated walks, first levels cut at their limit
)
def test_one_statement_gives_the_cluster_and_links_of_the_two_steps(nodes, edges, event, max_nodes):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selectors, "IDENTITY_CLUSTER_MAX_NODES", max_nodes)
        two_steps, one_statement = f.TenantFactory(), f.TenantFactory()
        for tenant in (two_steps, one_statement):
            graph(tenant, nodes, edges)
        found = identifiers(event)
        identity_link(tenant=two_steps, source="conversion:payment", **found)
        expected = identity_cluster(
            two_steps,
            visitor_ids=[found["visitor_id"]],
            emails=[found["email"]],
            customer_ids=[found["customer_external_id"]],
        )
        cluster = identity_link_and_cluster(tenant=one_statement, source="conversion:payment", **found)
        assert cluster.as_json() == expected.as_json()
        assert cluster.seed == expected.seed
        assert links_of(one_statement) == links_of(two_steps)


def test_a_new_person_is_linked_and_walked_in_one_statement_seeing_only_its_workspace(world):
    found = {"visitor_id": "v-new", "email": "new@buyer.example", "customer_external_id": "cus_new"}
    # The same identifiers linked to more in another workspace: never part of this one's cluster.
    identity_link(tenant=world.b, source="test", visitor_id="v-new", email="other@b.example")
    with CaptureQueriesContext(connection) as captured:
        cluster = identity_link_and_cluster(tenant=world.a, source="conversion:payment", **found)
    assert len(captured.captured_queries) == 1
    assert cluster.as_json() == {
        "visitor_ids": ["v-new"],
        "emails": ["new@buyer.example"],
        "customer_ids": ["cus_new"],
        "truncated": False,
    }
    assert len(links_of(world.a)) == 3 and len(links_of(world.b)) == 1
    # Known already: one more statement per further level of the walk, as the walk alone.
    identity_link(tenant=world.a, source="test", email="new@buyer.example", customer_external_id="cus_old")
    with CaptureQueriesContext(connection) as captured:
        cluster = identity_link_and_cluster(
            tenant=world.a, source="conversion:payment", visitor_id="v-2", email="new@buyer.example"
        )
    assert sorted(cluster.customer_ids) == ["cus_new", "cus_old"] and "v-new" in cluster.visitor_ids
    assert len(captured.captured_queries) == 2
