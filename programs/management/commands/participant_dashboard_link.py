"""``manage.py participant_dashboard_link <participant>``: print a participant's signed dashboard link.

<participant> is ``<tenant_slug>/<program_slug>/<external_id>`` or a participant id. ``--reissue``
issues a new link first, so every link given out before stops working (e.g. one that leaked).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from programs.dashboard_links import dashboard_url
from programs.models import Participant
from programs.services import participant_dashboard_link_reissue
from referral_platform.tenancy.actors import system_actor


class Command(BaseCommand):
    help = "Print a participant's signed dashboard link (share, referrals, rewards, messages)."

    def add_arguments(self, parser):
        parser.add_argument("participant", help="<tenant_slug>/<program_slug>/<external_id>, or the participant's id")
        parser.add_argument("--reissue", action="store_true", help="Revoke earlier links and issue a new one.")

    def _participant(self, spec: str) -> Participant:
        queryset = Participant.objects.select_related("tenant", "program")
        if spec.isdigit():
            participant = queryset.filter(pk=int(spec)).first()
        elif spec.count("/") == 2:
            tenant_slug, program_slug, external_id = spec.split("/")
            participant = queryset.filter(
                tenant__slug=tenant_slug, program__slug=program_slug, external_id=external_id
            ).first()
        else:
            raise CommandError("Name the participant as <tenant_slug>/<program_slug>/<external_id> or by its id.")
        if participant is None:
            raise CommandError(f"No participant {spec!r}.")
        return participant

    def handle(self, *args, participant, reissue=False, **options):
        person = self._participant(participant)
        if reissue:
            person = participant_dashboard_link_reissue(
                participant=person, actor=system_actor(person.tenant), reason="reissued from the command line"
            )
        self.stdout.write(f"{person.name} ({person.program.name}, {person.tenant.name}):")
        self.stdout.write(dashboard_url(person))
