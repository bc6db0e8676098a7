"""API of engagement: NPS responses and trigger events in, policies, templates, campaigns, webhook endpoints
and their delivery log, the NPS report, and signed dashboard URLs for embedding."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from programs.models import Participant, Program
from referral_platform.tenancy.api import TenantAPIView, int_param
from referrals.apis import TenantPrimaryKeyField

from . import selectors, services
from .models import (
    CommunicationKind,
    Moment,
    MomentSource,
    NpsImport,
    Trigger,
    TriggerPolicy,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)


# --- NPS responses and events ------------------------------------------------------------------
class MomentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Moment
        fields = [
            "id",
            "trigger",
            "external_id",
            "source",
            "program",
            "customer_external_id",
            "email",
            "name",
            "score",
            "comment",
            "occurred_at",
            "outcome",
            "received_at",
            "processed_at",
        ]


class NpsResponseInputSerializer(serializers.Serializer):
    response_id = serializers.CharField(max_length=200, help_text="The survey tool's response id (idempotency).")
    customer_external_id = serializers.CharField(max_length=200)
    email = serializers.EmailField(max_length=254)
    score = serializers.IntegerField(min_value=0, max_value=10)
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    answered_at = serializers.DateTimeField()
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    company = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    program = TenantPrimaryKeyField(model=Program, required=False, default=None, allow_null=True)


class NpsResponseListCreateApi(TenantAPIView, generics.ListAPIView):
    """NPS responses as received; POST one (idempotent on ``response_id``: 201 first, 200 for a repeat)."""

    model = Moment
    serializer_class = MomentOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.filter(trigger=Trigger.NPS)

    @extend_schema(request=NpsResponseInputSerializer, responses={201: MomentOutputSerializer})
    def post(self, request):
        data = NpsResponseInputSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        values = data.validated_data
        recorded = services.moment_record(
            tenant=self.tenant,
            raw=dict(request.data),
            source=MomentSource.API,
            program=values["program"],
            trigger=Trigger.NPS,
            external_id=values["response_id"],
            customer_external_id=values["customer_external_id"],
            email=values["email"],
            score=values["score"],
            occurred_at=values["answered_at"],
            name=values["name"],
            company=values["company"],
            comment=values["comment"],
        )
        return Response(MomentOutputSerializer(recorded.moment).data, status=201 if recorded.created else 200)


EVENT_TRIGGERS = [value for value in Trigger.values if value != Trigger.NPS]


class EventInputSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=200, help_text="Your id of the event (idempotency).")
    type = serializers.ChoiceField(choices=EVENT_TRIGGERS)
    customer_external_id = serializers.CharField(max_length=200)
    email = serializers.EmailField(max_length=254)
    occurred_at = serializers.DateTimeField()
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    company = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    program = TenantPrimaryKeyField(model=Program, required=False, default=None, allow_null=True)


class EventListCreateApi(TenantAPIView, generics.ListAPIView):
    """Trigger moments (renewal, usage milestone, support ticket resolved, purchase, deal won)."""

    model = Moment
    serializer_class = MomentOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.exclude(trigger=Trigger.NPS)

    @extend_schema(request=EventInputSerializer, responses={201: MomentOutputSerializer})
    def post(self, request):
        data = EventInputSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        values = data.validated_data
        recorded = services.moment_record(
            tenant=self.tenant,
            raw=dict(request.data),
            program=values["program"],
            trigger=values["type"],
            external_id=values["event_id"],
            customer_external_id=values["customer_external_id"],
            email=values["email"],
            occurred_at=values["occurred_at"],
            name=values["name"],
            company=values["company"],
        )
        return Response(MomentOutputSerializer(recorded.moment).data, status=201 if recorded.created else 200)


class NpsImportOutputSerializer(serializers.ModelSerializer):
    percent_done = serializers.IntegerField(read_only=True)

    class Meta:
        model = NpsImport
        fields = [
            "id",
            "filename",
            "status",
            "total_rows",
            "processed_rows",
            "created_count",
            "error_count",
            "errors",
            "percent_done",
            "created_at",
            "finished_at",
        ]


class NpsImportInputSerializer(serializers.Serializer):
    file = serializers.FileField()
    program = TenantPrimaryKeyField(model=Program, required=False, default=None, allow_null=True)


class NpsImportCreateApi(TenantAPIView, generics.ListAPIView):
    """Upload a CSV of NPS responses (columns response_id, customer_external_id, email, score, answered_at;
    optional name, company, comment); follow its progress and per-row errors at the detail URL."""

    model = NpsImport
    serializer_class = NpsImportOutputSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=NpsImportInputSerializer, responses={201: NpsImportOutputSerializer})
    def post(self, request):
        data = NpsImportInputSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        try:
            content = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise serializers.ValidationError({"file": "The file must be UTF-8 CSV."}) from None
        row = services.nps_import_create(
            tenant=self.tenant, filename=upload.name, content=content, program=data.validated_data["program"]
        )
        row.refresh_from_db()
        return Response(NpsImportOutputSerializer(row).data, status=201)


class NpsImportDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = NpsImport
    serializer_class = NpsImportOutputSerializer


class NpsReportApi(TenantAPIView):
    """Per month: responses → promoters → invited → enrolled → first referral → paying → revenue."""

    model = Moment

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        program_id = request.query_params.get("program")
        return Response({"months": selectors.nps_funnel(self.tenant, program_id=program_id)})


# --- policies ------------------------------------------------------------------------------------
class TriggerPolicySerializer(serializers.ModelSerializer):
    program = TenantPrimaryKeyField(model=Program)

    class Meta:
        model = TriggerPolicy
        fields = [
            "id",
            "program",
            "trigger",
            "is_enabled",
            "delay_minutes",
            "suppression_days",
            "quiet_hours_start",
            "quiet_hours_end",
            "daily_cap",
            "review_url",
        ]


class TriggerPolicyListCreateApi(TenantAPIView, generics.ListAPIView):
    model = TriggerPolicy
    serializer_class = TriggerPolicySerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("program")

    @extend_schema(request=TriggerPolicySerializer, responses={201: TriggerPolicySerializer})
    def post(self, request):
        data = TriggerPolicySerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        policy = _policy_save(tenant=self.tenant, values=data.validated_data)
        return Response(TriggerPolicySerializer(policy, context=self.get_serializer_context()).data, status=201)


def _policy_save(*, tenant, values: dict, policy: TriggerPolicy | None = None) -> TriggerPolicy:
    from .services.policies import trigger_policy_save

    return trigger_policy_save(tenant=tenant, policy=policy, **values)


class TriggerPolicyDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = TriggerPolicy
    serializer_class = TriggerPolicySerializer

    @extend_schema(request=TriggerPolicySerializer, responses={200: TriggerPolicySerializer})
    def put(self, request, pk):
        policy = self.get_object()
        data = TriggerPolicySerializer(policy, data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        policy = _policy_save(tenant=self.tenant, values=data.validated_data, policy=policy)
        return Response(TriggerPolicySerializer(policy, context=self.get_serializer_context()).data)


# --- templates and campaigns ----------------------------------------------------------------------
class TemplateInputSerializer(serializers.Serializer):
    subject = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=20000)


class MessageTemplateApi(TenantAPIView):
    """The program's template of one kind (GET: saved or default; PUT: save)."""

    model = Program

    def _program(self, pk, kind):
        if kind not in CommunicationKind.values:
            raise serializers.ValidationError({"kind": f"Choose one of: {', '.join(CommunicationKind.values)}."})
        return self.get_queryset().filter(pk=pk).first() or _not_found()

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk, kind):
        from .services.communications import template_for

        subject, body = template_for(program=self._program(pk, kind), kind=kind)
        return Response({"kind": kind, "subject": subject, "body": body})

    @extend_schema(request=TemplateInputSerializer, responses={200: OpenApiTypes.OBJECT})
    def put(self, request, pk, kind):
        program = self._program(pk, kind)
        data = TemplateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.message_template_save(program=program, kind=kind, **data.validated_data)
        return Response({"kind": kind, "subject": row.subject, "body": row.body})


def _not_found():
    from django.http import Http404

    raise Http404


class MessageTemplatePreviewApi(MessageTemplateApi):
    """POST a draft (or nothing) to see it as a sample participant would."""

    http_method_names = ["get", "post", "head"]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk, kind):
        return Response(services.message_template_preview(program=self._program(pk, kind), kind=kind))

    @extend_schema(
        request=inline_serializer(
            "TemplateDraft",
            fields={
                "subject": serializers.CharField(required=False, allow_blank=True),
                "body": serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, pk, kind):
        program = self._program(pk, kind)
        return Response(
            services.message_template_preview(
                program=program,
                kind=kind,
                subject=str(request.data.get("subject", "")),
                body=str(request.data.get("body", "")),
            )
        )


class TestSendInputSerializer(serializers.Serializer):
    to = serializers.EmailField()


class MessageTemplateTestSendApi(MessageTemplateApi):
    http_method_names = ["get", "post", "head"]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk, kind):
        return Response(services.message_template_preview(program=self._program(pk, kind), kind=kind))

    @extend_schema(request=TestSendInputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, pk, kind):
        program = self._program(pk, kind)
        data = TestSendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.message_template_test_send(program=program, kind=kind, to=data.validated_data["to"]))


class CampaignInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[CommunicationKind.LAUNCH, CommunicationKind.REMINDER, CommunicationKind.SUCCESS_STORY]
    )
    key = serializers.CharField(max_length=80, required=False, default="", help_text="Once per key (e.g. story id).")
    headline = serializers.CharField(max_length=200, required=False, default="")
    story = serializers.CharField(max_length=10000, required=False, default="")
    inactive_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, default=30)

    def validate(self, attrs):
        if attrs["kind"] == CommunicationKind.SUCCESS_STORY and not (attrs["headline"] and attrs["story"]):
            raise serializers.ValidationError({"story": "A success story needs a headline and a story."})
        return attrs


class ProgramCommunicationApi(TenantAPIView):
    """Send a launch announcement, reminders to inactive participants, or a success story."""

    model = Program

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        program = self.get_queryset().filter(pk=pk).first() or _not_found()
        return Response({"sent": selectors.communication_counts(self.tenant, program=program)})

    @extend_schema(request=CampaignInputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, pk):
        program = self.get_queryset().filter(pk=pk).first() or _not_found()
        data = CampaignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["kind"] == CommunicationKind.REMINDER:
            sent = services.reminders_send(program=program, inactive_days=values["inactive_days"])
        else:
            sent = services.campaign_send(
                program=program,
                kind=values["kind"],
                key=values["key"] or values["kind"],
                context={"headline": values["headline"], "story": values["story"]},
            )
        return Response({"sent": sent}, status=201)


class ParticipantCommunicationListApi(TenantAPIView):
    """The send log of one participant: every e-mail (engagement and the step messages) with its status."""

    model = Participant

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        participant = self.get_queryset().filter(pk=pk).first() or _not_found()
        return Response({"results": selectors.participant_send_log(self.tenant, participant=participant)})


# --- embedding ------------------------------------------------------------------------------------
DASHBOARD_URL_RESPONSE = inline_serializer(
    "DashboardUrl",
    fields={
        "url": serializers.URLField(help_text="Signed dashboard URL; link to it or frame it from an allowed domain."),
        "expires_at": serializers.DateTimeField(help_text="After this moment the URL is refused (403)."),
    },
)


class DashboardUrlApi(TenantAPIView):
    """A short-lived signed URL of the participant's dashboard, to link or frame from the tenant's product."""

    model = Participant

    @extend_schema(request=None, responses={200: DASHBOARD_URL_RESPONSE})
    def get(self, request, pk):
        return self.post(request, pk)

    @extend_schema(request=None, responses={200: DASHBOARD_URL_RESPONSE})
    def post(self, request, pk):
        participant = self.get_queryset().filter(pk=pk).first() or _not_found()
        url, expires_at = services.embed_url_create(participant)
        return Response({"url": url, "expires_at": expires_at.isoformat()})


# --- webhooks -----------------------------------------------------------------------------------
class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEventType.choices), required=False, default=list
    )
    secret = serializers.SerializerMethodField(
        help_text="In full only in the answers of create and rotate-secret; else its last four characters."
    )

    def get_secret(self, endpoint) -> str:
        from referral_platform.crypto import last_four

        return endpoint.secret if self.context.get("reveal_secret") else last_four(endpoint.secret)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "secret",
            "previous_secret_expires_at",
            "is_active",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "created_at",
        ]
        read_only_fields = [
            "previous_secret_expires_at",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "created_at",
        ]


class WebhookEndpointListCreateApi(TenantAPIView, generics.ListAPIView):
    model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer

    @extend_schema(request=WebhookEndpointSerializer, responses={201: WebhookEndpointSerializer})
    def post(self, request):
        data = WebhookEndpointSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        endpoint = services.webhook_endpoint_create(
            tenant=self.tenant,
            url=values["url"],
            event_types=values.get("event_types", []),
            description=values.get("description", ""),
        )
        return Response(WebhookEndpointSerializer(endpoint, context={"reveal_secret": True}).data, status=201)


class WebhookEndpointDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer

    @extend_schema(request=WebhookEndpointSerializer, responses={200: WebhookEndpointSerializer})
    def patch(self, request, pk):
        endpoint = self.get_object()
        data = WebhookEndpointSerializer(endpoint, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        endpoint = services.webhook_endpoint_update(
            endpoint=endpoint,
            url=values.get("url"),
            event_types=values.get("event_types"),
            is_active=values.get("is_active"),
        )
        return Response(WebhookEndpointSerializer(endpoint).data)


class WebhookEndpointRotateApi(TenantAPIView, generics.RetrieveAPIView):
    """POST: a new secret; the previous one keeps signing beside it for 24 hours."""

    model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer

    @extend_schema(request=None, responses={200: WebhookEndpointSerializer})
    def post(self, request, pk):
        endpoint = services.webhook_endpoint_rotate_secret(endpoint=self.get_object())
        return Response(WebhookEndpointSerializer(endpoint, context={"reveal_secret": True}).data)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_type = serializers.CharField(source="message.event_type")
    msg_id = serializers.CharField(source="message.msg_id")
    payload = serializers.JSONField(source="message.payload")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event_type",
            "msg_id",
            "payload",
            "status",
            "attempt_count",
            "next_attempt_at",
            "delivered_at",
            "attempts",
            "created_at",
        ]


class WebhookDeliveryListApi(TenantAPIView, generics.ListAPIView):
    """Outbound webhook deliveries, newest first, each with its attempts; filter with ``?endpoint=<id>``."""

    model = WebhookDelivery
    serializer_class = WebhookDeliverySerializer
    query_params_allowed = ("endpoint",)

    def scope_queryset(self, queryset):
        queryset = queryset.select_related("message")
        endpoint = int_param(self.request, "endpoint")
        return queryset.filter(endpoint_id=endpoint) if endpoint is not None else queryset


class WebhookDeliveryResendApi(TenantAPIView, generics.RetrieveAPIView):
    """GET one delivery with its attempts; POST sends it again now."""

    model = WebhookDelivery
    serializer_class = WebhookDeliverySerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("message")

    def post(self, request, pk):
        delivery = services.webhook_delivery_resend(delivery=self.get_object())
        delivery.refresh_from_db()
        return Response(WebhookDeliverySerializer(delivery).data, status=202)


# --- workspace settings ---------------------------------------------------------------------------
class EngagementSettingsSerializer(serializers.Serializer):
    time_zone = serializers.CharField(max_length=64, required=False)
    lead_score_boost = serializers.IntegerField(min_value=-1000, max_value=1000, required=False)
    typeform_secret = serializers.CharField(
        max_length=200, required=False, allow_blank=True, write_only=True, help_text="Typeform's webhook secret."
    )
    typeform_score_field_ref = serializers.CharField(max_length=200, required=False, allow_blank=True)
    typeform_program = TenantPrimaryKeyField(model=Program, required=False, allow_null=True)

    def validate_time_zone(self, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Unknown time zone; use an IANA name such as Europe/Berlin.") from None
        return value


class EngagementSettingsApi(TenantAPIView):
    """The workspace's engagement settings: time zone (quiet hours, daily caps), the lead-score boost of
    referral events, and the Typeform webhook (its secret is shown by its last four characters only)."""

    model = Moment

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(selectors.engagement_settings(self.tenant))

    @extend_schema(request=EngagementSettingsSerializer, responses={200: OpenApiTypes.OBJECT})
    def put(self, request):
        from .services.policies import engagement_settings_save

        data = EngagementSettingsSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        engagement_settings_save(tenant=self.tenant, **data.validated_data)
        return Response(selectors.engagement_settings(self.tenant))
