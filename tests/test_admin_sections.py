"""The admin is organised by task: Programs · People · Activity · Money · Trust · Settings; raw tables in a
collapsed "Data" section; every registered model still appears exactly once."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_sidebar_and_index_group_models_by_task_with_raw_tables_collapsed(world, client):
    client.force_login(world.owner_a)

    page = client.get(reverse("admin:programs_program_changelist")).content.decode()

    sections = re.findall(r'class="section" title="[^"]*">([^<]+)</a>', page)
    assert sections[:6] == ["Programs", "People", "Activity", "Money", "Trust", "Settings"] and sections[-1] == "Data"
    data = page.split('<details class="admin-data" id="admin-data-section">')[1].split("</details>")[0]
    assert "Ledger accounts" in data and "Touchpoints" in data and "Audit events" in data
    assert "Rewards" not in re.findall(r">([^<]+)</a></th>", data)


def test_every_admin_model_appears_once(world, client):
    from referral_platform.tenancy.admin_base import site
    from referral_platform.tenancy.admin_sections import sectioned_app_list

    client.force_login(world.owner_a)
    request = client.get(reverse("admin:index")).wsgi_request
    per_app = super(site.__class__, site).get_app_list(request)
    regrouped = sectioned_app_list(per_app, site._registry)
    before = sorted(m["admin_url"] for app in per_app for m in app["models"])
    after = sorted(m["admin_url"] for section in regrouped for m in section["models"])
    assert before == after and len(after) == len(set(after))


def test_an_apps_own_page_keeps_djangos_list(world, client):
    client.force_login(world.owner_a)
    assert client.get(reverse("admin:app_list", args=["rewards"])).status_code == 200
