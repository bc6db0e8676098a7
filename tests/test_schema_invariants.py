"""Schema rules of the design: tenant-owned rows lead with tenant in every unique constraint."""

from django.apps import apps
from django.db import models

from referral_platform.tenancy.models import TenantOwnedModel

# Routing keys resolved before any tenant is known (documented on the model).
GLOBAL_ROUTING_KEYS = {
    ("referrals", "ReferralLink", "referral_link_code_route"),
    ("tenancy", "ApiKey", "prefix"),
    ("tenancy", "Invitation", "token_hash"),
    ("partners", "PartnerInvitation", "token_hash"),
    # A login belongs to one partner of one tenant: the user decides the tenant at log-in.
    ("partners", "PartnerUser", "user"),
}


def _unique_sets(model):
    for constraint in model._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint):
            yield constraint.name, list(constraint.fields)
    for field in model._meta.local_fields:
        if field.unique and not field.primary_key:
            yield field.name, [field.name]
    for together in model._meta.unique_together:
        yield "+".join(together), list(together)


def test_every_unique_constraint_on_tenant_data_includes_the_tenant():
    offenders = []
    for model in apps.get_models():
        if not issubclass(model, TenantOwnedModel):
            continue
        for name, fields in _unique_sets(model):
            key = (model._meta.app_label, model.__name__, name)
            if key in GLOBAL_ROUTING_KEYS:
                continue
            if fields[0] != "tenant":
                offenders.append(f"{model._meta.label}.{name}: {fields}")
    assert not offenders, f"unique constraints without a leading tenant: {offenders}"
