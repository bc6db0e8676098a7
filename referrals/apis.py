from rest_framework import generics, serializers

from referral_platform.tenancy.api import TenantAPIView

from .models import Referral


class ReferralOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Referral
        fields = [
            "id",
            "program",
            "referrer",
            "referred_email",
            "referred_company",
            "status",
            "clicked_at",
            "signed_up_at",
            "qualified_at",
            "converted_at",
            "rejected_at",
            "churned_at",
            "created_at",
        ]


class ReferralListApi(TenantAPIView, generics.ListAPIView):
    model = Referral
    serializer_class = ReferralOutputSerializer


class ReferralDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Referral
    serializer_class = ReferralOutputSerializer
