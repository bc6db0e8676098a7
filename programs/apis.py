from rest_framework import generics, serializers
from rest_framework.response import Response

from referral_platform.tenancy.api import TenantAPIView

from . import services
from .models import Participant, Program


class ProgramOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Program
        fields = [
            "id",
            "name",
            "slug",
            "kind",
            "status",
            "access",
            "landing_url",
            "cookie_window_days",
            "attribution_model",
            "currency",
            "hold_days",
            "auto_approve_limit_minor",
            "created_at",
        ]


class ProgramInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False)
    kind = serializers.ChoiceField(choices=Program._meta.get_field("kind").choices)
    landing_url = serializers.URLField(max_length=500)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    cookie_window_days = serializers.IntegerField(min_value=1, max_value=365, required=False)


class ProgramListCreateApi(TenantAPIView, generics.ListAPIView):
    model = Program
    serializer_class = ProgramOutputSerializer

    def post(self, request):
        data = ProgramInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        program = services.program_create(tenant=self.tenant, actor=self.actor, **data.validated_data)
        return Response(ProgramOutputSerializer(program).data, status=201)


class ProgramDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Program
    serializer_class = ProgramOutputSerializer


class ParticipantOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Participant
        fields = ["id", "program", "external_id", "name", "email", "company", "status", "created_at"]


class ParticipantListApi(TenantAPIView, generics.ListAPIView):
    model = Participant
    serializer_class = ParticipantOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("program")


class ParticipantDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Participant
    serializer_class = ParticipantOutputSerializer
