"""The resource library: who may see a resource, and the audit of every download."""

from __future__ import annotations

from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.services import audit_record

from ..models import Partner, Resource


def resource_visible_to(resource: Resource, partner: Partner) -> bool:
    """Published, of the partner's tenant, and for the partner's tier or a lower one."""
    return resource.tenant_id == partner.tenant_id and resource.is_published and partner.tier_rank >= resource.min_rank


def resource_download_record(*, resource: Resource, partner: Partner, actor: Actor | str) -> None:
    audit_record(
        tenant=resource.tenant,
        actor=actor,
        action="resource.downloaded",
        obj=resource,
        data={"partner": partner.pk, "partner_name": partner.name, "title": resource.title},
    )
