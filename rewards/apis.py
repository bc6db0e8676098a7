"""API of rewards: a participant's Stripe Connect status and onboarding link; rewards with how each amount
was computed; what the evaluation of each conversion decided."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from programs.models import Participant
from referral_platform.tenancy.api import TenantAPIView, int_param

from .models import ParticipantStripeProfile, Reward, RewardEvaluation, RewardStatus, mask_secret
from .payouts import connect_onboarding_link_create
from .selectors import reward_evaluations_with_reward_ids


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

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, pk: int):
        """Whether the participant has a Stripe Connect account for payouts (its id masked)."""
        participant = self.get_object()
        return Response(self.OutputSerializer(self._status(participant)).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request, pk: int):
        """A one-time Stripe Connect onboarding link for the participant (their Connect account is created on
        the first call). Send them to ``url``; Stripe returns them to ``return_url`` when done, or to
        ``refresh_url`` when the link expired. 502 when Stripe cannot be reached or refuses."""
        participant = self.get_object()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        url = connect_onboarding_link_create(participant=participant, actor=self.actor, **data.validated_data)
        return Response(self.OutputSerializer({**self._status(participant), "url": url}).data, status=201)


# --- rewards and their evaluation ----------------------------------------------------------------


class RewardOutputSerializer(serializers.ModelSerializer):
    net_minor = serializers.IntegerField(read_only=True)
    time_to_reward_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Reward
        fields = [
            "id",
            "program",
            "participant",
            "beneficiary_side",
            "kind",
            "description",
            "amount_minor",
            "reversed_minor",
            "clawed_back_minor",
            "net_minor",
            "currency",
            "status",
            "status_reason",
            "hold_until",
            "explanation_text",
            "explanation",
            "source_key",
            "conversion_event",
            "referral",
            "payout",
            "converted_at",
            "approved_at",
            "paid_at",
            "time_to_reward_seconds",
            "created_at",
        ]

    def get_time_to_reward_seconds(self, obj) -> int | None:
        return int(obj.time_to_reward.total_seconds()) if obj.time_to_reward is not None else None


REWARD_FILTERS = (
    ("participant", "participant_id"),
    ("referral", "referral_id"),
    ("conversion", "conversion_event_id"),
    ("program", "program_id"),
)


class RewardListApi(TenantAPIView, generics.ListAPIView):
    """Rewards, newest first, each with how its amount was computed; filter with ``?participant=``,
    ``?referral=``, ``?conversion=`` (event id), ``?program=``, ``?status=``."""

    model = Reward
    serializer_class = RewardOutputSerializer
    query_params_allowed = (*(name for name, _ in REWARD_FILTERS), "status")
    query_param_choices = {"status": RewardStatus.values}

    def scope_queryset(self, queryset):
        for param, field in REWARD_FILTERS:
            value = int_param(self.request, param)
            if value is not None:
                queryset = queryset.filter(**{field: value})
        status = self.request.query_params.get("status")
        if status:
            if status not in RewardStatus.values:
                raise DjangoValidationError({"status": f"Use one of {', '.join(RewardStatus.values)}."})
            queryset = queryset.filter(status=status)
        return queryset.order_by("-created_at", "-pk")


class RewardDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Reward
    serializer_class = RewardOutputSerializer


class RewardEvaluationOutputSerializer(serializers.ModelSerializer):
    conversion = serializers.IntegerField(source="conversion_event_id")
    rewards = serializers.SerializerMethodField()

    class Meta:
        model = RewardEvaluation
        fields = [
            "id",
            "conversion",
            "referral",
            "status",
            "notes",
            "detail",
            "rewards_created",
            "rewards",
            "attempts",
            "evaluated_at",
        ]

    def get_rewards(self, obj) -> list[int]:
        if hasattr(obj, "reward_ids"):  # lists: reward_evaluations_with_reward_ids
            return obj.reward_ids
        return list(
            Reward.objects.for_tenant(obj.tenant_id)
            .filter(conversion_event_id=obj.conversion_event_id)
            .order_by("pk")
            .values_list("pk", flat=True)
        )


class RewardEvaluationListApi(TenantAPIView, generics.ListAPIView):
    """What evaluating each conversion decided and why (also when nothing was granted); filter with
    ``?conversion=<event id>`` or ``?referral=``."""

    model = RewardEvaluation
    serializer_class = RewardEvaluationOutputSerializer
    query_params_allowed = ("conversion", "referral")

    def scope_queryset(self, queryset):
        for param, field in (("conversion", "conversion_event_id"), ("referral", "referral_id")):
            value = int_param(self.request, param)
            if value is not None:
                queryset = queryset.filter(**{field: value})
        return reward_evaluations_with_reward_ids(queryset).order_by("-evaluated_at", "-pk")
