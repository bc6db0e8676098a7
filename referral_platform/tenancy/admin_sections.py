"""The admin organised by task, not by table: which sidebar/index section each admin model belongs to.

Labels are strings (no imports of higher layers). A ModelAdmin may say ``admin_section = "Money"``
itself; a model named nowhere lands in "Data", the collapsed section of raw and audit tables.
"""

from __future__ import annotations

SECTIONS = ("Programs", "People", "Activity", "Money", "Trust", "Settings", "Data")
DATA = "Data"

SECTION_OF_MODEL = {
    "programs.program": "Programs",
    "partners.partnerprogramsettings": "Programs",
    "partners.partnertier": "Programs",
    "partners.resource": "Programs",
    "programs.participant": "People",
    "programs.participantimport": "People",
    "partners.partner": "People",
    "partners.partnerapplication": "People",
    "partners.partnerinvitation": "People",
    "partners.partnertierchange": "People",
    "partners.supportticket": "People",
    "rewards.participantmessage": "People",
    "referrals.referral": "Activity",
    "referrals.conversionevent": "Activity",
    "referrals.click": "Activity",
    "referrals.attribution": "Activity",
    "referrals.referrallink": "Activity",
    "partners.dealregistration": "Activity",
    "partners.dealconflict": "Activity",
    "rewards.reward": "Money",
    "rewards.payout": "Money",
    "rewards.payoutsettings": "Money",
    "rewards.participantstripeprofile": "Money",
    "referrals.fraudreview": "Trust",
    "referrals.fraudpolicy": "Trust",
    "referrals.fraudflag": "Trust",
    "tenancy.tenant": "Settings",
    "tenancy.membership": "Settings",
    "tenancy.invitation": "Settings",
    "tenancy.apikey": "Settings",
    "rewards.stripecredentials": "Settings",
    "auth.user": "Settings",
}


def sectioned_app_list(app_list: list[dict], registry: dict) -> list[dict]:
    """Django's per-app list regrouped into SECTIONS (empty ones dropped), models in their apps' order."""
    admin_of = {model._meta.label_lower: model_admin for model, model_admin in registry.items()}
    grouped: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    for app in app_list:
        for model in app["models"]:
            label = f"{app['app_label']}.{model['object_name'].lower()}"
            section = getattr(admin_of.get(label), "admin_section", None) or SECTION_OF_MODEL.get(label, DATA)
            grouped[section if section in grouped else DATA].append(model)
    return [
        {
            "name": name,
            "app_label": name.lower(),
            "app_url": models[0]["admin_url"],
            "has_module_perms": True,
            "models": models,
        }
        for name, models in grouped.items()
        if models
    ]
