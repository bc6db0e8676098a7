"""Small defects found while trying the product as a marketer (issue 11, item 7), each pinned by a test.

The two that only a browser shows (the 13 by 13 px checkbox, the landing background in bands) are checked
by measuring in Chromium: tests/e2e/test_marketer_pages.py.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.urls import reverse

from programs.models import ProgramStatus
from tests import factories as f

pytestmark = pytest.mark.django_db


def test_favicon_is_served_and_every_base_template_links_it(world, client):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ACTIVE, slug="open")
    f.ProgramVersionFactory(program=program)
    link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program))
    icon = static("favicon.svg")
    assert finders.find("favicon.svg")
    assert client.get("/favicon.ico")["Location"] == icon

    public = [
        "/",
        f"/join/{link.code}/",
        reverse("program_terms_page", args=["tenant-a", "open"]),
        f"/join/{'x' * 12}/",  # the link-not-found page
    ]
    for url in public:
        assert f'<link rel="icon" href="{icon}"' in client.get(url).content.decode(), url
    client.force_login(world.marketer_a)
    for url in [reverse("admin:index"), reverse("admin:programs_program_changelist")]:
        assert f'<link rel="icon" href="{icon}"' in client.get(url).content.decode(), url


def test_import_page_without_a_failure_shows_no_error_box(world, client):
    job = f.ParticipantImportFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:programs_participantimport_change", args=[job.pk])).content.decode()

    box = re.search(r'<p id="import-failure"[^>]*>(.*?)</p>', page)
    assert box and " hidden" in box.group(0) and box.group(1) == ""
    assert ".errornote[hidden] { display: none; }" in page  # the admin's .errornote rule would beat [hidden]


def test_landing_form_fields_describe_themselves_with_ids_that_exist(world, client):
    link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))

    page = client.post(f"/join/{link.code}/", {"name": "", "email": "jane@gmail.com"}).content.decode()

    described = [ref for refs in re.findall(r'aria-describedby="([^"]+)"', page) for ref in refs.split()]
    ids = set(re.findall(r'\sid="([^"]+)"', page))
    assert described, "the invalid fields point at their error messages"
    assert [ref for ref in described if ref not in ids] == []


def test_rules_preview_textarea_has_a_label(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:programs_program_rules_preview", args=[program.pk])).content.decode()

    textarea = re.search(r'<textarea[^>]*name="rules_json"[^>]*>', page).group(0)
    textarea_id = re.search(r'id="([^"]+)"', textarea).group(1)
    assert f'<label for="{textarea_id}">' in page
