"""The base classes do the scoping so a subclass cannot forget it."""

import pytest
from rest_framework import generics

from programs.models import Program
from referral_platform.tenancy.api import TenantAPIView


@pytest.mark.parametrize("attribute", ["get_queryset", "queryset", "get_object"])
def test_a_tenant_api_view_cannot_replace_the_scoped_queryset(attribute):
    with pytest.raises(TypeError, match=attribute):
        type("Leaky", (TenantAPIView, generics.ListAPIView), {"model": Program, attribute: lambda self: None})


@pytest.mark.django_db
def test_scope_queryset_can_narrow_but_never_widen(world, rf):
    from .factories import ProgramFactory

    ProgramFactory(tenant=world.a)
    ProgramFactory(tenant=world.b)

    class Widening(TenantAPIView, generics.ListAPIView):
        model = Program

        def scope_queryset(self, queryset):
            return Program.objects.all()  # tries to escape the tenant

    view = Widening()
    view.request = type("R", (), {"auth": None, "_request": type("D", (), {})()})()
    view.request._request.actor = __import__("referral_platform.tenancy.actors", fromlist=["Actor"]).Actor(
        kind="member", tenant=world.b, role="owner"
    )

    assert {p.tenant_id for p in view.get_queryset()} == {world.b.pk}
