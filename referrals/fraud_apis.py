"""API of fraud review: a referral's signals with their evidence, and the marketer's decision."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from referral_platform.tenancy.api import TenantAPIView

from .fraud import referral_is_rewardable
from .fraud_services import REVIEW_REASON_MAX_LENGTH, referral_review_clear, referral_review_reject
from .models import FraudFlag, Referral


class FraudSignalOutputSerializer(serializers.ModelSerializer):
    label = serializers.CharField(source="get_code_display")

    class Meta:
        model = FraudFlag
        fields = ["code", "label", "message", "evidence", "created_at"]


class ReferralFraudOutputSerializer(serializers.ModelSerializer):
    referral = serializers.IntegerField(source="pk")
    # A plain string: the funnel status's enum is documented on the referral endpoints.
    referral_status = serializers.CharField(source="status")
    reviewed_by = serializers.SerializerMethodField()
    is_rewardable = serializers.SerializerMethodField()
    signals = FraudSignalOutputSerializer(many=True, source="fraud_flags")

    class Meta:
        model = Referral
        fields = [
            "referral",
            "referral_status",
            "review_status",
            "reviewed_by",
            "reviewed_at",
            "review_reason",
            "fraud_screened_at",
            "is_rewardable",
            "signals",
        ]

    def get_reviewed_by(self, referral) -> str | None:
        return referral.reviewed_by.email if referral.reviewed_by else None

    def get_is_rewardable(self, referral) -> bool:
        return referral_is_rewardable(referral)


class ReviewDecisionInputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["clear", "reject"])
    reason = serializers.CharField(max_length=REVIEW_REASON_MAX_LENGTH, trim_whitespace=True)


DECISION_SERVICES = {"clear": referral_review_clear, "reject": referral_review_reject}


class ReferralFraudApi(TenantAPIView, generics.RetrieveAPIView):
    """``GET``: the referral's fraud signals with their evidence and its review state.
    ``POST {"decision": "clear"|"reject", "reason": "..."}``: decide a flagged referral."""

    model = Referral
    serializer_class = ReferralFraudOutputSerializer

    def scope_queryset(self, queryset):
        flags = FraudFlag.objects.for_tenant(self.tenant).order_by("created_at", "code")
        return queryset.select_related("reviewed_by").prefetch_related(Prefetch("fraud_flags", queryset=flags))

    @extend_schema(request=ReviewDecisionInputSerializer, responses=ReferralFraudOutputSerializer)
    def post(self, request, pk):
        referral = self.get_object()
        data = ReviewDecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        DECISION_SERVICES[data.validated_data["decision"]](
            referral=referral, actor=self.actor, reason=data.validated_data["reason"]
        )
        return Response(ReferralFraudOutputSerializer(self.get_object()).data)
