"""Isolation harness: every route and every admin model proves tenant B cannot see or touch tenant A.

It grows by itself: URL patterns and admin registrations are enumerated, and a route or model with no
case in tests/isolation.py fails ``test_every_route_has_an_isolation_case``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from referral_platform.tenancy.admin_base import site as admin_site
from referral_platform.tenancy.models import Tenant, TenantOwnedModel

from .isolation import (
    ADMIN_FACTORIES,
    NO_TENANT_DATA_PREFIXES,
    ROUTES,
    Detail,
    Listing,
    NoTenantData,
    PartnerPage,
    PartnerPeople,
    SignedLink,
)


def _walk(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _walk(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            yield f"{namespace}{pattern.name}" if pattern.name else f"{namespace}<unnamed {pattern.pattern}>"


ALL_ROUTES = sorted(set(_walk(get_resolver().url_patterns)))
NON_ADMIN_ROUTES = [name for name in ALL_ROUTES if not name.startswith("admin:")]


def _covered(name: str) -> bool:
    return name in ROUTES or any(name.startswith(prefix) for prefix in NO_TENANT_DATA_PREFIXES)


def test_every_route_has_an_isolation_case():
    missing = [name for name in NON_ADMIN_ROUTES if not _covered(name)]
    assert not missing, f"routes without an isolation case in tests/isolation.py: {missing}"
    stale = [name for name in ROUTES if name not in ALL_ROUTES]
    assert not stale, f"isolation cases for routes that no longer exist: {stale}"


def test_every_admin_model_of_tenant_data_has_a_factory():
    tenant_models = [model for model in admin_site._registry if model is Tenant or issubclass(model, TenantOwnedModel)]
    missing = [model.__name__ for model in tenant_models if model not in ADMIN_FACTORIES]
    assert not missing, f"admin models without an isolation factory in tests/isolation.py: {missing}"
    assert all(model in admin_site._registry for model in ADMIN_FACTORIES)


def _client_for(world, via, tenant_side, client_factory):
    if via == "api":
        return world.api(world.key_a if tenant_side == "a" else world.key_b)
    client = client_factory()
    client.force_login(world.marketer_a if tenant_side == "a" else world.marketer_b)
    return client


DETAIL_CASES = [(name, case) for name, case in ROUTES.items() if isinstance(case, Detail)]
SIGNED_CASES = [(name, case) for name, case in ROUTES.items() if isinstance(case, SignedLink)]
LISTING_CASES = [(name, case) for name, case in ROUTES.items() if isinstance(case, Listing)]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case"), DETAIL_CASES, ids=[name for name, _ in DETAIL_CASES])
def test_tenant_b_gets_404_on_tenant_a_objects(world, client_class, name, case):
    url = reverse(name, kwargs=case.make(world))
    owner = _client_for(world, case.via, "a", client_class)
    intruder = _client_for(world, case.via, "b", client_class)
    if not case.action:
        assert owner.get(url).status_code == 200, f"{name}: tenant A cannot open its own object"

    for method in case.methods:
        response = (
            getattr(intruder, method.lower())(url, case.payload, format="json")
            if case.via == "api"
            else getattr(intruder, method.lower())(url, case.payload)
        )
        assert response.status_code in (403, 404), f"{name} {method} as tenant B answered {response.status_code}"
    if case.action:
        response = getattr(owner, case.methods[0].lower())(url, case.payload, format="json")
        assert response.status_code in (200, 409), f"{name}: tenant A cannot reach its own object"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case"), LISTING_CASES, ids=[name for name, _ in LISTING_CASES])
def test_tenant_b_never_sees_tenant_a_rows_in_lists(world, client_class, name, case):
    marker = case.make(world)
    url = reverse(name) + case.query

    own = _client_for(world, case.via, "a", client_class).get(url)
    other = _client_for(world, case.via, "b", client_class).get(url)

    assert own.status_code == 200 and marker in own.content.decode(), f"{name}: marker missing for tenant A"
    assert other.status_code == 200
    assert marker not in other.content.decode(), f"{name} leaks tenant A's rows to tenant B"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case"), SIGNED_CASES, ids=[name for name, _ in SIGNED_CASES])
def test_a_signed_link_opens_only_its_own_participants_page(world, client, name, case):
    from programs.dashboard_links import sign_dashboard_payload

    made = case.make(world)
    own = client.get(reverse(name, kwargs=made["a"]))
    other = client.get(reverse(name, kwargs=made["b"]))
    assert own.status_code == 200, f"{name}: tenant A's participant cannot open their own page"
    assert other.status_code == 200
    if made["marker"]:
        assert made["marker"] in own.content.decode()
        assert made["marker"] not in other.content.decode(), f"{name} shows tenant A's participant to B's link"
    else:
        assert own.content != other.content
    token = made["a"]["token"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    a_person = made["people"]["a"]
    foreign = sign_dashboard_payload({"t": world.b.pk, "p": a_person.pk, "v": a_person.dashboard_link_version})
    for bad in (tampered, foreign, "not-a-token", token.replace(":", ".", 1)):
        assert client.get(reverse(name, kwargs={"token": bad})).status_code == 404, f"{name} accepted {bad!r}"


@pytest.fixture
def client_class():
    from django.test import Client

    return Client


ADMIN_MODELS = list(ADMIN_FACTORIES)


def _admin_url(model, action, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{action}", args=args)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ADMIN_MODELS, ids=[m.__name__ for m in ADMIN_MODELS])
def test_marketer_of_b_cannot_open_or_list_tenant_a_objects_in_admin(world, client, model):
    obj = ADMIN_FACTORIES[model](world)
    change_url = _admin_url(model, "change", obj.pk)
    client.force_login(world.owner_a)
    assert client.get(change_url).status_code == 200, "tenant A's owner should open its own object"
    assert change_url in client.get(_admin_url(model, "changelist")).content.decode()

    client.force_login(world.marketer_b)
    opened = client.get(change_url)
    listing = client.get(_admin_url(model, "changelist"))
    deleted = client.post(_admin_url(model, "delete", obj.pk), {"post": "yes"})

    assert opened.status_code in (302, 403, 404), f"B opened A's {model.__name__}"
    assert listing.status_code in (200, 403) and change_url not in listing.content.decode()
    assert deleted.status_code in (302, 403, 404)
    assert model.objects.filter(pk=obj.pk).exists(), "B deleted A's object"


@pytest.mark.django_db
def test_platform_staff_see_every_tenant_in_admin(world, client):
    staff = get_user_model().objects.create_superuser(
        "staff@platform.example", "staff@platform.example", "pw-123456789"
    )
    client.force_login(staff)

    page = client.get(_admin_url(Tenant, "changelist")).content.decode()

    assert _admin_url(Tenant, "change", world.a.pk) in page and _admin_url(Tenant, "change", world.b.pk) in page


def test_no_route_table_entry_is_unused_kind():
    assert all(isinstance(case, Detail | Listing | NoTenantData | SignedLink | PartnerPage) for case in ROUTES.values())


PARTNER_CASES = [(name, case) for name, case in ROUTES.items() if isinstance(case, PartnerPage)]


def _send(client, method, url, payload):
    return getattr(client, method.lower())(url, payload) if method != "GET" else client.get(url)


def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "case"), PARTNER_CASES, ids=[name for name, _ in PARTNER_CASES])
def test_a_partner_sees_and_changes_only_its_own_portal_data(world, client_class, name, case):
    people = PartnerPeople(world)
    made = case.make(world, people)
    url = reverse(name, kwargs=made["kwargs"])
    marker = made["marker"]

    owner = client_class()
    owner.force_login(people.a1_user)
    own = _send(owner, case.methods[0], url, case.payload)
    assert own.status_code in (200, 302), f"{name}: partner A1 cannot open its own page ({own.status_code})"
    if marker and own.status_code == 200:
        assert marker in _body(own), f"{name}: marker missing for partner A1"

    for intruder_user, who in (
        (people.a2_user, "partner A2 of the same tenant"),
        (people.b1_user, "tenant B's partner"),
    ):
        intruder = client_class()
        intruder.force_login(intruder_user)
        for method in case.methods:
            response = _send(intruder, method, url, case.payload)
            if case.detail:
                assert response.status_code == 404, f"{name} {method} as {who} answered {response.status_code}"
            else:
                assert response.status_code in (200, 302, 400), f"{name} {method} as {who}: {response.status_code}"
            if marker:
                assert marker not in _body(response), f"{name} shows partner A1's data to {who}"

    member = client_class()
    member.force_login(world.marketer_a)
    assert member.get(url).status_code in (404, 405), f"{name}: a marketer reached the portal"
    visitor = client_class().get(url)
    assert visitor.status_code in (302, 405) and (
        visitor.status_code == 405 or "/accounts/login/" in visitor["Location"]
    )
