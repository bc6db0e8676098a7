"""The public, tenant-branded application page: rate-limited, duplicates refused, bad input named."""

from __future__ import annotations

import pytest
from django.urls import reverse

from partners.models import PartnerApplication
from tests.factories import ProgramFactory

from .builders import partner_program

pytestmark = pytest.mark.django_db


def _form(**overrides):
    return {
        "company": "Bluebird Consulting",
        "website": "https://bluebird.io",
        "partner_type": "services",
        "contact_name": "Bea",
        "email": "bea@bluebird.io",
        "audience": "CFOs",
        "expected_volume": "3 a quarter",
        "terms_accepted": "on",
        **overrides,
    }


def test_the_page_is_tenant_branded_and_an_application_is_stored(world, client):
    program = partner_program(world.a, name="Tenant A partners")
    url = reverse("partner_apply", args=[world.a.slug, program.slug])

    page = client.get(url)
    sent = client.post(url, _form())

    assert page.status_code == 200 and "Become a partner of Tenant A" in page.content.decode()
    assert sent.status_code == 200 and "application-received" in sent.content.decode()
    assert PartnerApplication.objects.get().program == program


def test_a_duplicate_or_bad_application_is_a_400_naming_the_field(world, client):
    program = partner_program(world.a)
    url = reverse("partner_apply", args=[world.a.slug, program.slug])
    client.post(url, _form())

    duplicate = client.post(url, _form(company="Bluebird again"))
    no_terms = client.post(url, _form(email="x@kite.io", website="https://kite.io", terms_accepted=""))

    assert duplicate.status_code == 400 and "email" in duplicate.context["form"].errors
    assert no_terms.status_code == 400 and "terms_accepted" in no_terms.context["form"].errors
    assert PartnerApplication.objects.count() == 1


def test_applications_are_rate_limited_per_address_with_retry_after(world, client, settings):
    settings.PUBLIC_FORM_RATE_LIMITS = {
        **settings.PUBLIC_FORM_RATE_LIMITS,
        "partner_apply": {"address": "2/3600", "program": "100/3600"},
    }
    program = partner_program(world.a)
    url = reverse("partner_apply", args=[world.a.slug, program.slug])

    answers = [client.post(url, _form(email=f"p{i}@co{i}.io", website=f"https://co{i}.io")) for i in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[2]["Retry-After"]) <= 3600
    assert PartnerApplication.objects.count() == 2


@pytest.mark.parametrize("kind", ["customer", "employee"])
def test_only_partner_programs_take_partner_applications(world, client, kind):
    program = ProgramFactory(tenant=world.a, kind=kind)

    assert client.get(reverse("partner_apply", args=[world.a.slug, program.slug])).status_code == 404
    assert client.get(reverse("partner_apply", args=[world.b.slug, program.slug])).status_code == 404
