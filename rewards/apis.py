"""API: a participant's Stripe Connect status and onboarding link."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.response import Response

from programs.models import Participant
from referral_platform.tenancy.api import TenantAPIView

from .models import ParticipantStripeProfile, mask_secret
from .payouts import connect_onboarding_link_create


class ParticipantStripeOnboardingApi(TenantAPIView):
    """GET: whether the participant has a Connect account. POST: an onboarding link (creates the account once)."""

    model = Participant

    class InputSerializer(serializers.Serializer):
        refresh_url = serializers.URLField()
        return_url = serializers.URLField()

    class OutputSerializer(serializers.Serializer):
        participant = serializers.IntegerField()
        has_connected_account = serializers.BooleanField()
        connected_account = serializers.CharField(allow_blank=True)
        url = serializers.CharField(required=False)

    serializer_class = OutputSerializer

    def _status(self, participant: Participant) -> dict:
        profile = ParticipantStripeProfile.objects.for_tenant(self.tenant).filter(participant=participant).first()
        account = profile.connected_account_id if profile else ""
        return {
            "participant": participant.pk,
            "has_connected_account": bool(account),
            "connected_account": mask_secret(account) if account else "",
        }

    def get(self, request, pk: int):
        participant = self.get_object()
        return Response(self.OutputSerializer(self._status(participant)).data)

    def post(self, request, pk: int):
        participant = self.get_object()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        url = connect_onboarding_link_create(participant=participant, actor=self.actor, **data.validated_data)
        return Response(self.OutputSerializer({**self._status(participant), "url": url}).data, status=201)
