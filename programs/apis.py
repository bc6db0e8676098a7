"""Programs and participants API: parse → call one service or selector → serialize."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from referral_platform.hooks import hooks
from referral_platform.tenancy.api import TenantAPIView, json_error, strict_fields
from referral_platform.tenancy.api_input import MAX_AMOUNT_MINOR, CurrencyField

from . import selectors, services
from .models import AttributionModel, Participant, Program, ProgramAccess, ProgramKind


class ProgramOutputSerializer(serializers.ModelSerializer):
    current_version = serializers.SerializerMethodField()

    class Meta:
        model = Program
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "kind",
            "status",
            "access",
            "landing_url",
            "cookie_window_days",
            "attribution_model",
            "time_decay_half_life_days",
            "currency",
            "hold_days",
            "auto_approve_limit_minor",
            "current_version",
            "created_at",
        ]

    def get_current_version(self, program) -> int | None:
        if hasattr(program, "current_version_number"):  # lists: programs_with_current_version_number
            return program.current_version_number
        version = selectors.program_latest_version(program)
        return version.number if version else None


class ProgramInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=ProgramKind.choices)
    access = serializers.ChoiceField(choices=ProgramAccess.choices, required=False)
    landing_url = serializers.URLField(max_length=500)
    currency = CurrencyField(required=False)
    cookie_window_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    attribution_model = serializers.ChoiceField(choices=AttributionModel.choices, required=False)
    time_decay_half_life_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    hold_days = serializers.IntegerField(min_value=0, max_value=365, required=False)
    auto_approve_limit_minor = serializers.IntegerField(min_value=0, max_value=MAX_AMOUNT_MINOR, required=False)
    rules = serializers.JSONField(required=False, help_text="A rules document (docs/programs.md); creates version 1.")


class ProgramUpdateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    slug = serializers.SlugField(max_length=80, required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=ProgramKind.choices, required=False)
    access = serializers.ChoiceField(choices=ProgramAccess.choices, required=False)
    landing_url = serializers.URLField(max_length=500, required=False)
    currency = CurrencyField(required=False)
    cookie_window_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    attribution_model = serializers.ChoiceField(choices=AttributionModel.choices, required=False)
    time_decay_half_life_days = serializers.IntegerField(min_value=1, max_value=365, required=False)
    hold_days = serializers.IntegerField(min_value=0, max_value=365, required=False)
    auto_approve_limit_minor = serializers.IntegerField(min_value=0, max_value=MAX_AMOUNT_MINOR, required=False)
    rules = serializers.JSONField(
        required=False,
        help_text="A complete rules document (docs/programs.md): one new version holds it with the changed settings.",
    )
    note = serializers.CharField(max_length=300, required=False, allow_blank=True, help_text="Why the rules change.")


class ProgramListCreateApi(TenantAPIView, generics.ListAPIView):
    model = Program
    serializer_class = ProgramOutputSerializer

    def scope_queryset(self, queryset):
        return selectors.programs_with_current_version_number(queryset)

    @extend_schema(request=ProgramInputSerializer, responses={201: ProgramOutputSerializer})
    def post(self, request):
        data = ProgramInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        program = services.program_create(tenant=self.tenant, actor=self.actor, **data.validated_data)
        return Response(ProgramOutputSerializer(program).data, status=201)


class ProgramDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Program
    serializer_class = ProgramOutputSerializer

    @extend_schema(request=ProgramUpdateInputSerializer, responses={200: ProgramOutputSerializer})
    def patch(self, request, pk):
        """Change a program's settings and/or rules (a new rules version). Its status changes only through
        POST /programs/{id}/activate, /pause and /archive; any field not listed here is refused (400)."""
        program = self.get_object()
        strict_fields(ProgramUpdateInputSerializer(), request.data, hints=PROGRAM_PATCH_HINTS)
        data = ProgramUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        rules, note = changes.pop("rules", None), changes.pop("note", "")
        configured = services.program_configure(
            program=program, actor=self.actor, changes=changes, rules=rules, note=note
        )
        return Response(ProgramOutputSerializer(configured.program).data)


PROGRAM_PATCH_HINTS = {
    "status": "The status changes only through POST /api/v1/programs/{id}/activate, /pause or /archive.",
    "id": "An id cannot be changed.",
    "created_at": "Cannot be changed.",
    "current_version": "Set new rules with the rules field (or PUT /programs/{id}/rules) instead.",
}


class StatusMoveInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", help_text="Why (kept in the audit log)."
    )


def _status_move_api(model, output, service, summary: str):
    """A POST endpoint that moves one object's status through its service (and state machine):
    200 with the object, 409 when its current status does not allow the move."""

    class StatusMoveApi(TenantAPIView, generics.GenericAPIView):
        serializer_class = output

        @extend_schema(request=StatusMoveInputSerializer, responses={200: output}, description=summary)
        def post(self, request, pk):
            obj = self.get_object()
            data = StatusMoveInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            field = "program" if model is Program else "participant"
            moved = service(**{field: obj}, actor=self.actor, reason=data.validated_data["reason"])
            return Response(output(moved).data)

    StatusMoveApi.model = model
    StatusMoveApi.__name__ = StatusMoveApi.__qualname__ = f"{model.__name__}{service.__name__.title()}Api"
    StatusMoveApi.__doc__ = summary
    return StatusMoveApi


class ProgramVersionOutputSerializer(serializers.Serializer):
    program = serializers.IntegerField(source="program_id")
    version = serializers.IntegerField(source="number")
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    note = serializers.CharField()
    rules = serializers.JSONField()


class ProgramRulesInputSerializer(serializers.Serializer):
    rules = serializers.JSONField(help_text="The complete rules document (docs/programs.md).")
    note = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class ProgramRulesApi(TenantAPIView, generics.GenericAPIView):
    """The program's current rules (GET) and changing them (PUT: a new version, 201; unchanged rules: 200)."""

    model = Program
    serializer_class = ProgramVersionOutputSerializer

    def get(self, request, pk):
        version = selectors.program_latest_version(self.get_object())
        if version is None:
            return json_error(404, "no_rules", "This program has no rules yet.")
        return Response(ProgramVersionOutputSerializer(version).data)

    @extend_schema(request=ProgramRulesInputSerializer, responses={200: ProgramVersionOutputSerializer})
    def put(self, request, pk):
        program = self.get_object()
        data = ProgramRulesInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = services.program_rules_change(program=program, actor=self.actor, **data.validated_data)
        return Response(ProgramVersionOutputSerializer(change.version).data, status=201 if change.created else 200)


class ProgramRulesPreviewInputSerializer(serializers.Serializer):
    rules = serializers.JSONField(help_text="The proposed rules document.")


class ProgramRulesPreviewApi(TenantAPIView, generics.GenericAPIView):
    """What the proposed rules (POST) would have paid on the last 90 days of payments, next to what was paid.

    GET replays the current rules instead: the difference then shows what referrals still judged under
    older versions were granted compared with today's rules.
    """

    model = Program
    serializer_class = ProgramRulesPreviewInputSerializer

    @extend_schema(responses={200: OpenApiResponse(description="Preview")})
    def get(self, request, pk):
        program = self.get_object()
        version = selectors.program_latest_version(program)
        if version is None:
            return json_error(404, "no_rules", "This program has no rules yet.")
        preview = hooks.rules_change_preview(tenant=self.tenant, program=program, proposed_rules=version.rules)
        return Response(preview.as_dict())

    @extend_schema(request=ProgramRulesPreviewInputSerializer, responses={200: OpenApiResponse(description="Preview")})
    def post(self, request, pk):
        program = self.get_object()
        data = ProgramRulesPreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        preview = hooks.rules_change_preview(
            tenant=self.tenant, program=program, proposed_rules=data.validated_data["rules"]
        )
        return Response(preview.as_dict())


class TermsSectionSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    items = serializers.ListField(child=serializers.CharField())


class ProgramTermsOutputSerializer(serializers.Serializer):
    program = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    effective_at = serializers.CharField(allow_null=True)
    notice = serializers.CharField()
    sections = TermsSectionSerializer(many=True)
    text = serializers.CharField()


class ProgramTermsApi(TenantAPIView, generics.GenericAPIView):
    """The plain-language terms participants see, rendered from the current rules."""

    model = Program
    serializer_class = ProgramTermsOutputSerializer

    def get(self, request, pk):
        terms = selectors.program_terms(self.tenant, program=self.get_object())
        return Response({"program_id": int(pk), **terms.as_dict()})


# --- participants -------------------------------------------------------------------------------
class ParticipantOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Participant
        fields = [
            "id",
            "program",
            "external_id",
            "name",
            "email",
            "company",
            "status",
            "source",
            "tier",
            "coupon_code",
            "created_at",
        ]


class ParticipantUpsertInputSerializer(serializers.Serializer):
    program = serializers.IntegerField(help_text="Id of one of your programs.")
    external_id = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200)
    email = serializers.EmailField()
    company = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    tier = serializers.CharField(
        max_length=40, required=False, allow_blank=True, help_text='Partner tier (e.g. "gold"; "" for none).'
    )
    send_welcome = serializers.BooleanField(
        required=False,
        default=True,
        help_text="E-mail a newly enrolled active participant their welcome (links, dashboard); at most once.",
    )


class ParticipantListApi(TenantAPIView, generics.ListAPIView):
    """List participants; POST upserts one by (program, external_id): 201 when new, 200 when it existed."""

    model = Participant
    serializer_class = ParticipantOutputSerializer

    def scope_queryset(self, queryset):
        return queryset.select_related("program")

    @extend_schema(request=ParticipantUpsertInputSerializer, responses={200: ParticipantOutputSerializer})
    def post(self, request):
        data = ParticipantUpsertInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        program = Program.objects.for_tenant(self.tenant).filter(pk=values.pop("program")).first()
        if program is None:
            raise serializers.ValidationError({"program": ["Unknown program."]})
        welcome = values.pop("send_welcome", True)
        enrolment = services.participant_upsert(
            tenant=self.tenant, program=program, actor=self.actor, source="api", welcome=welcome, **values
        )
        return Response(
            ParticipantOutputSerializer(enrolment.participant).data, status=201 if enrolment.created else 200
        )


class ParticipantDetailApi(TenantAPIView, generics.RetrieveAPIView):
    model = Participant
    serializer_class = ParticipantOutputSerializer


ProgramActivateApi = _status_move_api(
    Program,
    ProgramOutputSerializer,
    services.program_activate,
    "Activate a draft or paused program: its links start sending visitors. Needs reward rules and a landing "
    "URL on an allowed domain (400 naming the field otherwise); 409 from any other status.",
)
ProgramPauseApi = _status_move_api(
    Program,
    ProgramOutputSerializer,
    services.program_pause,
    "Pause an active program: its links stop sending visitors; existing referrals keep their rules. 409 when "
    "the program is not active.",
)
ProgramArchiveApi = _status_move_api(
    Program,
    ProgramOutputSerializer,
    services.program_archive,
    "Archive a program (final). 409 when it is already archived.",
)
ParticipantApproveApi = _status_move_api(
    Participant,
    ParticipantOutputSerializer,
    services.participant_approve,
    "Approve a pending (or rejected) applicant: they become active and get their referral links. 409 from any "
    "other status.",
)
ParticipantRejectApi = _status_move_api(
    Participant,
    ParticipantOutputSerializer,
    services.participant_reject,
    "Reject a pending applicant (they are told by e-mail, with the reason when given). 409 from any other status.",
)
ParticipantRemoveApi = _status_move_api(
    Participant,
    ParticipantOutputSerializer,
    services.participant_remove,
    "Remove an active participant: their links stop working; their referrals are kept. 409 from any other status.",
)
