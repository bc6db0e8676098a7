import json
import re

from django.http import HttpResponse
from django.http.request import RawPostDataException
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from programs.models import Participant
from referral_platform.tenancy.api import TenantAPIView, int_param, json_error
from referral_platform.tenancy.api_input import BoundedDateTimeField, CurrencyField

from . import selectors, services
from .models import Attribution, Channel, CompanySize, ConversionEvent, ConversionKind, Referral, Touchpoint
from .selectors import attribution_explanation


class ReferralOutputSerializer(serializers.ModelSerializer):
    rule_version = serializers.IntegerField(source="rule_version.number", allow_null=True, default=None)

    class Meta:
        model = Referral
        fields = [
            "id",
            "program",
            "referrer",
            "referred_email",
            "referred_company",
            "status",
            "source",
            "referred_name",
            "referred_company_size",
            "referred_industry",
            "referred_employees",
            "referred_annual_revenue_minor",
            "referred_external_id",
            "how_did_you_hear",
            "qualification",
            "rule_version",
            "clicked_at",
            "signed_up_at",
            "qualified_at",
            "converted_at",
            "rejected_at",
            "churned_at",
            "established_at",
            "created_at",
        ]


class ReferralListApi(TenantAPIView, generics.ListAPIView):
    model = Referral
    serializer_class = ReferralOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("rule_version")


class ReferralDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Referral
    serializer_class = ReferralOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("rule_version")


# --- sign-ups, leads, conversions, attributions ----------------------------------------------------
@extend_schema_field(OpenApiTypes.INT)
class TenantPrimaryKeyField(serializers.Field):
    """A foreign key in input that must belong to the request's tenant (another tenant's id is
    answered like a missing one)."""

    def __init__(self, *, model, **kwargs):
        self.model = model
        super().__init__(**kwargs)
        self.error_messages["does_not_exist"] = f"Unknown {model._meta.verbose_name}."
        self.error_messages["incorrect_type"] = "Send the id (an integer)."

    def to_internal_value(self, data):
        # ASCII digits only ("²³".isdigit() is true, int() refuses it), and within a bigint.
        if isinstance(data, bool) or not isinstance(data, int | str) or not re.fullmatch(r"[0-9]{1,18}", str(data)):
            self.fail("incorrect_type")
        obj = self.model.objects.for_tenant(self.context["tenant"]).filter(pk=int(data)).first()
        if obj is None:
            self.fail("does_not_exist")
        return obj

    def to_representation(self, value):
        return value.pk


class CompanyProfileInput(serializers.Serializer):
    """What the tenant knows of the referred company, for the rules' ideal-customer profile (R-6)."""

    industry = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="", help_text="The referred company's industry."
    )
    employees = serializers.IntegerField(
        min_value=1, max_value=10_000_000, required=False, default=None, help_text="The referred company's headcount."
    )
    annual_revenue_minor = serializers.IntegerField(
        min_value=0,
        max_value=10**15,
        required=False,
        default=None,
        help_text="The referred company's annual revenue in minor units of the program's currency.",
    )


class SignupInputSerializer(CompanyProfileInput):
    email = serializers.EmailField(max_length=254)
    referral_code = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    visitor_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    customer_external_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    company = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    company_size = serializers.ChoiceField(choices=CompanySize.choices, required=False, allow_blank=True, default="")
    how_did_you_hear = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    coupon_code = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="A participant's coupon code (or a referral code typed as one): establishes the referral on its own.",
    )
    occurred_at = BoundedDateTimeField(required=False, default=None)


class TouchpointOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Touchpoint
        fields = ["id", "kind", "program", "participant", "referral", "label", "occurred_at"]


class SignupOutputSerializer(serializers.Serializer):
    referral = ReferralOutputSerializer(allow_null=True)
    referral_created = serializers.BooleanField()
    touchpoints = TouchpointOutputSerializer(many=True)


class SignupCreateApi(TenantAPIView):
    """The tenant's product reports a sign-up (referral code and/or visitor id, e-mail, customer id,
    "how did you hear about us"). 201 when it created a referral, else 200."""

    model = Referral
    serializer_class = SignupInputSerializer

    @extend_schema(request=SignupInputSerializer, responses={200: SignupOutputSerializer, 201: SignupOutputSerializer})
    def post(self, request):
        data = SignupInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.signup_record(tenant=self.tenant, actor=self.actor, **data.validated_data)
        body = SignupOutputSerializer(outcome).data
        return Response(body, status=201 if outcome.referral_created else 200)


class LeadInputSerializer(CompanyProfileInput):
    participant = TenantPrimaryKeyField(
        model=Participant,
        required=False,
        default=None,
        help_text="The participant submitting the lead; optional when coupon_code or referral_code names them.",
    )
    coupon_code = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    referral_code = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    name = serializers.CharField(max_length=200)
    email = serializers.EmailField(max_length=254)
    company = serializers.CharField(max_length=200)
    company_size = serializers.ChoiceField(choices=CompanySize.choices, required=False, allow_blank=True, default="")
    budget = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    authority = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    need = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    timeline = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    occurred_at = BoundedDateTimeField(required=False, default=None)


class LeadCreateApi(TenantAPIView):
    """A partner's lead with qualifying information (R-11), submitted for the partner."""

    model = Referral
    serializer_class = LeadInputSerializer

    @extend_schema(request=LeadInputSerializer, responses={201: ReferralOutputSerializer})
    def post(self, request):
        data = LeadInputSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        referral = services.lead_submit(tenant=self.tenant, actor=self.actor, **data.validated_data)
        return Response(ReferralOutputSerializer(referral).data, status=201)


class ConversionInputSerializer(CompanyProfileInput):
    external_event_id = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=ConversionKind.choices)
    amount_minor = serializers.IntegerField(min_value=0, max_value=10**15, required=False, default=0)
    currency = CurrencyField(required=False, allow_blank=True, default="")
    occurred_at = BoundedDateTimeField()
    customer_external_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")
    referral_code = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    coupon_code = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="A participant's coupon code used with this purchase: establishes the referral on its own.",
    )
    visitor_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    # Read from the stored payload (not columns of the event):
    seats = serializers.IntegerField(
        min_value=1, max_value=100_000, required=False, help_text="Seats bought (per-seat rewards); default 1."
    )
    refunded_event_id = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="For a refund: the external_event_id of the payment refunded (default: the customer's latest "
        "payment before the refund).",
    )
    EVALUATION_FIELDS = ("seats", "refunded_event_id", "industry", "employees", "annual_revenue_minor")

    def validate(self, data):
        if data.get("refunded_event_id") and data["kind"] != ConversionKind.REFUND:
            raise serializers.ValidationError({"refunded_event_id": "Only a refund names the payment it refunds."})
        if (data["kind"] in services.MONEY_KINDS or data["amount_minor"]) and not data["currency"]:
            raise serializers.ValidationError({"currency": "Required for events with an amount (ISO code, e.g. USD)."})
        identity = ("customer_external_id", "email", "referral_code", "coupon_code", "visitor_id")
        if not any(data[name].strip() for name in identity):
            raise serializers.ValidationError(
                {"identity": f"Send at least one of {', '.join(identity)} so the event can be matched."}
            )
        return data


class ConversionReceiptSerializer(serializers.ModelSerializer):
    """What POST answers, identically for the first delivery and its repeats."""

    class Meta:
        model = ConversionEvent
        fields = [
            "id",
            "external_event_id",
            "kind",
            "amount_minor",
            "currency",
            "occurred_at",
            "customer_external_id",
            "email",
            "referral_code",
            "coupon_code",
            "visitor_id",
            "received_at",
        ]


class ConversionOutputSerializer(ConversionReceiptSerializer):
    attributions = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta(ConversionReceiptSerializer.Meta):
        fields = [
            *ConversionReceiptSerializer.Meta.fields,
            "status",
            "error",
            "referral",
            "processed_at",
            "attributions",
        ]


def _raw_body(request) -> str:
    try:
        return request._request.body.decode("utf-8", errors="replace")
    except RawPostDataException:  # the stream was consumed before the view ran
        return json.dumps(request.data)


class ConversionListCreateApi(TenantAPIView, generics.ListAPIView):
    """POST stores a conversion event raw (once per external_event_id) and queues its processing:
    201 the first time, 200 with the same body for a repeat, 409 for a repeat with another payload."""

    model = ConversionEvent
    serializer_class = ConversionOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.prefetch_related("attributions")

    @extend_schema(
        request=ConversionInputSerializer,
        responses={200: ConversionReceiptSerializer, 201: ConversionReceiptSerializer},
    )
    def post(self, request):
        raw_body = _raw_body(request)  # before request.data consumes the stream
        data = ConversionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = {k: v for k, v in data.validated_data.items() if k not in ConversionInputSerializer.EVALUATION_FIELDS}
        try:
            received = services.conversion_event_receive(
                tenant=self.tenant, raw=request.data, raw_body=raw_body, **fields
            )
        except services.ConversionEventConflict as conflict:
            message = (
                f"external_event_id: {conflict.external_event_id!r} was already received with a different payload."
            )
            response = json_error(409, "conflict", message)
            response.data["error"]["fields"] = {"external_event_id": [message.split(": ", 1)[1]]}
            return response
        return Response(ConversionReceiptSerializer(received.event).data, status=201 if received.created else 200)


class ConversionDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = ConversionEvent
    serializer_class = ConversionOutputSerializer


class AttributionOutputSerializer(serializers.ModelSerializer):
    conversion = serializers.IntegerField(source="conversion_event_id")
    external_event_id = serializers.CharField(source="conversion_event.external_event_id")
    participant_name = serializers.CharField(source="participant.name")
    rule_version = serializers.IntegerField(source="rule_version.number", allow_null=True, default=None)
    share = serializers.DecimalField(max_digits=7, decimal_places=6)
    explanation = serializers.SerializerMethodField()

    class Meta:
        model = Attribution
        fields = [
            "id",
            "conversion",
            "external_event_id",
            "referral",
            "program",
            "participant",
            "participant_name",
            "rule_version",
            "model",
            "share",
            "amount_minor",
            "currency",
            "touchpoints",
            "evidence",
            "explanation",
            "computed_at",
        ]

    def get_explanation(self, obj) -> list[str]:
        return attribution_explanation(obj)


class AttributionListApi(TenantAPIView, generics.ListAPIView):
    """Attribution rows; filter with ``?conversion=<event id>`` (and/or ``participant``, ``referral``)."""

    model = Attribution
    serializer_class = AttributionOutputSerializer
    query_params_allowed = ("conversion", "participant", "referral")

    def scope_queryset(self, queryset):
        for param, field in (
            ("conversion", "conversion_event_id"),
            ("participant", "participant_id"),
            ("referral", "referral_id"),
        ):
            value = int_param(self.request, param)
            if value is not None:
                queryset = queryset.filter(**{field: value})
        return queryset.select_related("conversion_event", "participant", "rule_version")


class AttributionDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Attribution
    serializer_class = AttributionOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("conversion_event", "participant", "rule_version")


# --- a participant's share links (programs' participants, referrals' links) ---------------------------
class ShareLinkSerializer(serializers.Serializer):
    channel = serializers.CharField()
    code = serializers.CharField()
    url = serializers.URLField()
    qr_png_url = serializers.URLField(required=False)
    created_at = serializers.DateTimeField()


class ParticipantLinksOutputSerializer(serializers.Serializer):
    participant = serializers.IntegerField()
    status = serializers.CharField()
    links = ShareLinkSerializer(many=True)


class ParticipantLinksApi(TenantAPIView, generics.GenericAPIView):
    """The participant's share URLs, one per channel (none unless the participant is active)."""

    model = Participant
    serializer_class = ParticipantLinksOutputSerializer

    def get(self, request, pk):
        participant = self.get_object()
        links = selectors.participant_share_links(self.tenant, participant=participant)
        for link in links:
            if link["channel"] == Channel.QR:
                link["qr_png_url"] = request.build_absolute_uri(f"{request.path.rstrip('/')}/qr.png")
        return Response(
            ParticipantLinksOutputSerializer(
                {"participant": participant.pk, "status": participant.status, "links": links}
            ).data
        )


class JsonErrorsOnly(BaseContentNegotiation):
    """Errors are JSON whatever the client accepts; the PNG itself is returned as a plain response."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return JSONRenderer(), JSONRenderer.media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class ParticipantQrApi(TenantAPIView, generics.GenericAPIView):
    """A PNG QR code of the participant's QR-channel share URL."""

    model = Participant
    serializer_class = ParticipantLinksOutputSerializer
    content_negotiation_class = JsonErrorsOnly

    @extend_schema(responses={(200, "image/png"): OpenApiResponse(description="QR code PNG")})
    def get(self, request, pk):
        png = selectors.participant_qr_png(self.tenant, participant=self.get_object())
        if png is None:
            return json_error(404, "no_link", "This participant has no active QR link.")
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=300"
        return response
