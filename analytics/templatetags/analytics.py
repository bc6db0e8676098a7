"""Template helpers of the analytics pages: KPI tile values and changes ("—" when undefined), and the
home include for any admin index (``{% analytics_home %}``)."""

from __future__ import annotations

from django import template

from referral_platform.money import format_money

from .. import metrics as m

register = template.Library()


@register.filter
def kpi_value(tile) -> str:
    if tile.value is None:
        return m.DASH
    if tile.unit == "money":
        return format_money(round(tile.value), tile.currency)
    if tile.unit == "percent":
        return f"{m.shown(float(tile.value), 1)} %"
    return f"{int(tile.value):,}"


@register.filter
def change_shown(value) -> str:
    if value is None:
        return m.DASH
    sign = "+" if value > 0 else ""
    return f"{sign}{m.shown(float(value), 1)} %"


@register.filter
def change_class(value) -> str:
    if value is None or value == 0:
        return "flat"
    return "up" if value > 0 else "down"


@register.inclusion_tag("analytics/_home.html", takes_context=True)
def analytics_home(context):
    """The home's content for the request's workspace, to drop into any page (the admin index)."""
    from ..views import _can_read, home_context

    request = context["request"]
    actor = getattr(request, "actor", None)
    if not _can_read(actor):
        return {"hidden": True}
    return {**home_context(request, actor.tenant), "request": request, "in_admin": True}
