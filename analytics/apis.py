"""API of analytics: the tenant reports customers won through other channels (for the referred vs other
channels comparison) as JSON or CSV; both validate every row before writing any."""

from __future__ import annotations

import csv
import io

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError as DrfValidationError
from rest_framework.response import Response

from referral_platform.tenancy.api import TenantAPIView

from .models import OtherChannelCustomer
from .services import other_channel_customers_upsert

CSV_COLUMNS = ["external_id", "channel", "lead_at", "converted_at", "deal_minor", "arr_minor", "currency", "churned_at"]


class OtherCustomerInputSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=200)
    channel = serializers.CharField(max_length=60)
    lead_at = serializers.DateTimeField()
    converted_at = serializers.DateTimeField(required=False, allow_null=True)
    deal_minor = serializers.IntegerField(required=False, min_value=0, default=0)
    arr_minor = serializers.IntegerField(required=False, min_value=0, default=0)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, allow_blank=True)
    churned_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs):
        if attrs.get("converted_at") and attrs["converted_at"] < attrs["lead_at"]:
            raise serializers.ValidationError({"converted_at": "A customer converts after it came in as a lead."})
        return attrs


class OtherCustomerBatchSerializer(serializers.Serializer):
    customers = OtherCustomerInputSerializer(many=True, allow_empty=False, max_length=10_000)


class OtherCustomerOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = OtherChannelCustomer
        fields = ["id", *CSV_COLUMNS]


def _csv_rows(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"external_id", "channel", "lead_at"} - set(reader.fieldnames or [])
    if missing:
        raise DrfValidationError({"file": [f"CSV columns missing: {', '.join(sorted(missing))}."]})
    rows = []
    for row in reader:
        rows.append({key: value for key, value in row.items() if key in CSV_COLUMNS and value not in (None, "")})
    return rows


class OtherCustomerListCreateApi(TenantAPIView, generics.ListAPIView):
    """GET lists the other-channel leads and customers; POST creates or updates them by ``external_id``:
    JSON ``{"customers": [...]}`` or a CSV body (``Content-Type: text/csv``) with the columns
    external_id, channel, lead_at, converted_at, deal_minor, arr_minor, currency, churned_at."""

    model = OtherChannelCustomer
    serializer_class = OtherCustomerOutputSerializer

    @extend_schema(
        request=OtherCustomerBatchSerializer,
        # What POST answers: how many rows were created or updated (not the rows, not paginated).
        responses={200: inline_serializer("OtherCustomersSaved", fields={"saved": serializers.IntegerField()})},
    )
    def post(self, request):
        if (request.content_type or "").startswith("text/csv"):
            payload = {"customers": _csv_rows(request.body.decode("utf-8-sig", errors="replace"))}
        else:
            payload = request.data
        batch = OtherCustomerBatchSerializer(data=payload)
        batch.is_valid(raise_exception=True)
        saved = other_channel_customers_upsert(tenant=self.tenant, rows=batch.validated_data["customers"])
        return Response({"saved": len(saved)}, status=200)
