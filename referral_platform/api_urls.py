from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.apis import OtherCustomerListCreateApi
from engagement import apis as engagement
from partners.apis import (
    AccountLookupApi,
    DealConflictListApi,
    DealDetailApi,
    DealListApi,
    PartnerDetailApi,
    PartnerListApi,
)
from programs.apis import (
    ParticipantApproveApi,
    ParticipantDetailApi,
    ParticipantListApi,
    ParticipantRejectApi,
    ParticipantRemoveApi,
    ProgramActivateApi,
    ProgramArchiveApi,
    ProgramDetailApi,
    ProgramListCreateApi,
    ProgramPauseApi,
    ProgramRulesApi,
    ProgramRulesPreviewApi,
    ProgramTermsApi,
)
from referral_platform.tenancy.authentication import api_actor
from referrals.apis import (
    AttributionDetailApi,
    AttributionListApi,
    ConversionDetailApi,
    ConversionListCreateApi,
    LeadCreateApi,
    ParticipantLinksApi,
    ParticipantQrApi,
    ReferralDetailApi,
    ReferralListApi,
    SignupCreateApi,
)
from referrals.fraud_apis import ReferralFraudApi
from rewards.apis import ParticipantStripeOnboardingApi, RewardDetailApi, RewardEvaluationListApi, RewardListApi


class MeOutputSerializer(serializers.Serializer):
    actor = serializers.CharField()
    tenant = serializers.DictField()


class MeApi(APIView):
    """Who the credentials act as, and for which workspace."""

    serializer_class = MeOutputSerializer

    def get(self, request):
        actor = api_actor(request)
        tenant = actor.tenant
        return Response(
            {
                "actor": actor.kind,
                "tenant": {"slug": tenant.slug, "name": tenant.name, "default_currency": tenant.default_currency},
            }
        )


app_name = "api"
urlpatterns = [
    path("me", MeApi.as_view(), name="me"),
    path("programs", ProgramListCreateApi.as_view(), name="program-list"),
    path("programs/<int:pk>", ProgramDetailApi.as_view(), name="program-detail"),
    path("programs/<int:pk>/activate", ProgramActivateApi.as_view(), name="program-activate"),
    path("programs/<int:pk>/pause", ProgramPauseApi.as_view(), name="program-pause"),
    path("programs/<int:pk>/archive", ProgramArchiveApi.as_view(), name="program-archive"),
    path("participants", ParticipantListApi.as_view(), name="participant-list"),
    path("participants/<int:pk>/approve", ParticipantApproveApi.as_view(), name="participant-approve"),
    path("participants/<int:pk>/reject", ParticipantRejectApi.as_view(), name="participant-reject"),
    path("participants/<int:pk>/remove", ParticipantRemoveApi.as_view(), name="participant-remove"),
    path("participants/<int:pk>", ParticipantDetailApi.as_view(), name="participant-detail"),
    path("programs/<int:pk>/rules", ProgramRulesApi.as_view(), name="program-rules"),
    path("programs/<int:pk>/rules/preview", ProgramRulesPreviewApi.as_view(), name="program-rules-preview"),
    path("programs/<int:pk>/terms", ProgramTermsApi.as_view(), name="program-terms"),
    path("participants/<int:pk>/links", ParticipantLinksApi.as_view(), name="participant-links"),
    path("participants/<int:pk>/links/qr.png", ParticipantQrApi.as_view(), name="participant-links-qr"),
    path("referrals", ReferralListApi.as_view(), name="referral-list"),
    path("referrals/<int:pk>", ReferralDetailApi.as_view(), name="referral-detail"),
    path("signups", SignupCreateApi.as_view(), name="signup-create"),
    path("leads", LeadCreateApi.as_view(), name="lead-create"),
    path("conversions", ConversionListCreateApi.as_view(), name="conversion-list"),
    path("conversions/<int:pk>", ConversionDetailApi.as_view(), name="conversion-detail"),
    path("attributions", AttributionListApi.as_view(), name="attribution-list"),
    path("attributions/<int:pk>", AttributionDetailApi.as_view(), name="attribution-detail"),
    path(
        "participants/<int:pk>/stripe-onboarding",
        ParticipantStripeOnboardingApi.as_view(),
        name="participant-stripe-onboarding",
    ),
    path("referrals/<int:pk>/fraud", ReferralFraudApi.as_view(), name="referral-fraud"),
    path("rewards", RewardListApi.as_view(), name="reward-list"),
    path("rewards/<int:pk>", RewardDetailApi.as_view(), name="reward-detail"),
    path("reward-evaluations", RewardEvaluationListApi.as_view(), name="reward-evaluation-list"),
    path("accounts/lookup", AccountLookupApi.as_view(), name="account-lookup"),
    path("deals", DealListApi.as_view(), name="deal-list"),
    path("deals/<int:pk>", DealDetailApi.as_view(), name="deal-detail"),
    path("partners", PartnerListApi.as_view(), name="partner-list"),
    path("partners/<int:pk>", PartnerDetailApi.as_view(), name="partner-detail"),
    path("deal-conflicts", DealConflictListApi.as_view(), name="deal-conflict-list"),
    path("analytics/other-customers", OtherCustomerListCreateApi.as_view(), name="analytics-other-customer-list"),
    # --- engagement ---
    path("nps-responses", engagement.NpsResponseListCreateApi.as_view(), name="nps-response-list"),
    path("nps-imports", engagement.NpsImportCreateApi.as_view(), name="nps-import-list"),
    path("nps-imports/<int:pk>", engagement.NpsImportDetailApi.as_view(), name="nps-import-detail"),
    path("nps-report", engagement.NpsReportApi.as_view(), name="nps-report"),
    path("events", engagement.EventListCreateApi.as_view(), name="event-list"),
    path("trigger-policies", engagement.TriggerPolicyListCreateApi.as_view(), name="trigger-policy-list"),
    path("trigger-policies/<int:pk>", engagement.TriggerPolicyDetailApi.as_view(), name="trigger-policy-detail"),
    path("programs/<int:pk>/templates/<slug:kind>", engagement.MessageTemplateApi.as_view(), name="message-template"),
    path(
        "programs/<int:pk>/templates/<slug:kind>/preview",
        engagement.MessageTemplatePreviewApi.as_view(),
        name="message-template-preview",
    ),
    path(
        "programs/<int:pk>/templates/<slug:kind>/test-send",
        engagement.MessageTemplateTestSendApi.as_view(),
        name="message-template-test-send",
    ),
    path(
        "programs/<int:pk>/communications", engagement.ProgramCommunicationApi.as_view(), name="program-communications"
    ),
    path(
        "participants/<int:pk>/communications",
        engagement.ParticipantCommunicationListApi.as_view(),
        name="participant-communications",
    ),
    path("participants/<int:pk>/dashboard-url", engagement.DashboardUrlApi.as_view(), name="participant-dashboard-url"),
    path("engagement-settings", engagement.EngagementSettingsApi.as_view(), name="engagement-settings"),
    path("webhook-endpoints", engagement.WebhookEndpointListCreateApi.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<int:pk>", engagement.WebhookEndpointDetailApi.as_view(), name="webhook-endpoint-detail"),
    path(
        "webhook-endpoints/<int:pk>/rotate-secret",
        engagement.WebhookEndpointRotateApi.as_view(),
        name="webhook-endpoint-rotate",
    ),
    path("webhook-deliveries", engagement.WebhookDeliveryListApi.as_view(), name="webhook-delivery-list"),
    path("webhook-deliveries/<int:pk>", engagement.WebhookDeliveryResendApi.as_view(), name="webhook-delivery-detail"),
]
