"""Tenant-side API of the partners app: account lookup for the sales team, deals (a CRM moves them to won or
lost), partners and conflicts. Tenant-scoped like the rest (``TenantAPIView``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from referral_platform.tenancy.api import TenantAPIView, int_param
from referral_platform.tenancy.authentication import api_actor

from .models import ConflictStatus, DealConflict, DealRegistration, DealStage, DealStatus, Partner, PartnerType
from .selectors import account_lookup
from .services import deal_stage_update


def _choice_param(request, name: str, choices) -> str | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value not in choices:
        raise DjangoValidationError({name: f"Use one of {', '.join(choices)}."})
    return value


class LookupPartnerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    type = serializers.CharField()


class LookupRegistrationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField()
    status = serializers.CharField()
    stage = serializers.CharField()
    company_name = serializers.CharField()
    partner = LookupPartnerSerializer()
    registered_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)


class AccountLookupOutputSerializer(serializers.Serializer):
    domain = serializers.CharField()
    belongs_to_partner = serializers.BooleanField()
    protected = serializers.BooleanField()
    registration = LookupRegistrationSerializer(allow_null=True)


class AccountLookupApi(APIView):
    """Does this account belong to a partner? ``?domain=`` takes a domain, URL or e-mail address; the answer
    names the partner's registration (protected, won, or waiting for review) and when protection ends."""

    serializer_class = AccountLookupOutputSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "domain",
                str,
                required=True,
                description="The account's web domain (acme.com); a URL or an e-mail address works too. A "
                "free-mail domain (gmail.com) is refused with 400.",
            )
        ],
        responses=AccountLookupOutputSerializer,
    )
    def get(self, request):
        actor = api_actor(request)
        answer = account_lookup(actor.tenant, domain=request.query_params.get("domain", ""))
        return Response(AccountLookupOutputSerializer(answer).data)


class DealOutputSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(read_only=True)
    partner_name = serializers.CharField(source="partner.name", read_only=True)
    commission_reward = serializers.IntegerField(source="commission_reward_id", read_only=True, allow_null=True)

    class Meta:
        model = DealRegistration
        fields = [
            "id",
            "reference",
            "partner",
            "partner_name",
            "program",
            "participant",
            "company_name",
            "domain",
            "contact_name",
            "contact_email",
            "deal_value_minor",
            "currency",
            "qualification",
            "notes",
            "status",
            "stage",
            "review_note",
            "registered_at",
            "approved_at",
            "expires_at",
            "closed_at",
            "won_amount_minor",
            "commission_reward",
            "extensions_count",
        ]


class DealListApi(TenantAPIView, generics.ListAPIView):
    """Deal registrations, newest first; filter with ``?status=``, ``?stage=``, ``?partner=``, ``?domain=``."""

    model = DealRegistration
    serializer_class = DealOutputSerializer
    query_params_allowed = ("status", "stage", "partner", "domain")
    query_param_choices = {"status": DealStatus.values, "stage": DealStage.values}

    def scope_queryset(self, queryset):
        status = _choice_param(self.request, "status", DealStatus.values)
        stage = _choice_param(self.request, "stage", DealStage.values)
        partner = int_param(self.request, "partner")
        domain = self.request.query_params.get("domain", "").strip().lower()
        if status:
            queryset = queryset.filter(status=status)
        if stage:
            queryset = queryset.filter(stage=stage)
        if partner is not None:
            queryset = queryset.filter(partner_id=partner)
        if domain:
            queryset = queryset.filter(domain=domain)
        return queryset.select_related("partner").order_by("-registered_at", "-pk")


class DealStageInputSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=DealStage.choices)
    amount_minor = serializers.IntegerField(required=False, min_value=0, allow_null=True)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class DealDetailApi(TenantAPIView, generics.RetrieveAPIView):
    """A deal registration. ``PATCH {"stage": "won", "amount_minor": 4000000}`` moves it (a CRM's update):
    ``won`` posts the partner's commission once however often it is sent; ``lost`` closes it."""

    model = DealRegistration
    serializer_class = DealOutputSerializer

    @extend_schema(request=DealStageInputSerializer, responses=DealOutputSerializer)
    def patch(self, request, pk: int):
        deal = self.get_object()
        data = DealStageInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deal = deal_stage_update(
            deal=deal,
            stage=data.validated_data["stage"],
            amount_minor=data.validated_data.get("amount_minor"),
            reason=data.validated_data.get("reason", ""),
            actor=self.actor,
        )
        deal.refresh_from_db()
        return Response(DealOutputSerializer(deal).data)


class PartnerOutputSerializer(serializers.ModelSerializer):
    tier = serializers.CharField(source="tier.slug", default="", read_only=True)
    programs = serializers.SerializerMethodField()
    participants = serializers.SerializerMethodField()

    class Meta:
        model = Partner
        fields = [
            "id",
            "name",
            "website",
            "partner_type",
            "country",
            "payout_currency",
            "commission_bp",
            "status",
            "tier",
            "tier_changed_at",
            "programs",
            "participants",
            "created_at",
        ]

    def get_programs(self, obj) -> list[int]:
        return [enrolment.program_id for enrolment in obj.enrolments.all()]

    def get_participants(self, obj) -> list[int]:
        return [enrolment.participant_id for enrolment in obj.enrolments.all()]


class PartnerListApi(TenantAPIView, generics.ListAPIView):
    """Partner companies; filter with ``?type=`` (reseller, affiliate, technology, services)."""

    model = Partner
    serializer_class = PartnerOutputSerializer
    query_params_allowed = ("type",)
    query_param_choices = {"type": PartnerType.values}

    def scope_queryset(self, queryset):
        partner_type = _choice_param(self.request, "type", PartnerType.values)
        if partner_type:
            queryset = queryset.filter(partner_type=partner_type)
        return queryset.select_related("tier").prefetch_related("enrolments").order_by("name", "pk")


class PartnerDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Partner
    serializer_class = PartnerOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("tier").prefetch_related("enrolments")


class DealConflictOutputSerializer(serializers.ModelSerializer):
    holder_reference = serializers.CharField(source="holder.reference", read_only=True)
    challenger_reference = serializers.CharField(source="challenger.reference", read_only=True)

    class Meta:
        model = DealConflict
        fields = [
            "id",
            "holder",
            "holder_reference",
            "challenger",
            "challenger_reference",
            "match",
            "similarity",
            "evidence",
            "status",
            "decision",
            "reason",
            "decided_by",
            "decided_at",
            "created_at",
        ]


class DealConflictListApi(TenantAPIView, generics.ListAPIView):
    """Conflicts between deal registrations, newest first; ``?status=open`` for those waiting."""

    model = DealConflict
    serializer_class = DealConflictOutputSerializer
    query_params_allowed = ("status",)
    query_param_choices = {"status": ConflictStatus.values}

    def scope_queryset(self, queryset):
        status = _choice_param(self.request, "status", ConflictStatus.values)
        if status:
            queryset = queryset.filter(status=status)
        return queryset.select_related("holder", "challenger").order_by("-created_at", "-pk")
