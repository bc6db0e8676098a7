"""CSV import of participants: the task in batches, per-row errors, resuming, the admin flow and the command."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from programs import services
from programs.models import ImportStatus, Participant, ParticipantImport
from referral_platform.tenancy.actors import system_actor
from tests import factories as f

pytestmark = pytest.mark.django_db

GOOD_AND_BAD = (
    "external_id,name,email,company\n"  # line 1
    "c1,Ann Archer,ann@acme.example,Acme\n"  # line 2
    "c2,,bob@acme.example,Acme\n"  # line 3: no name
    "c3,Cid Chen,not-an-email,Acme\n"  # line 4: bad e-mail
    'c4,"Dee\nDoe",dee@acme.example,Acme\n'  # lines 5-6: a quoted name spanning two lines
    ",Eve Evans,eve@acme.example,Acme\n"  # line 7: no external id
    "c6,Fay Fox,fay@acme.example,Acme,surplus\n"  # line 8: one value too many
    "c1,Ann A. Archer,ann@acme.example,Acme\n"  # line 9: updates c1
)


def make_job(program, content=GOOD_AND_BAD, enqueue=False):
    return services.participant_import_create(
        tenant=program.tenant,
        program=program,
        actor=system_actor(program.tenant),
        filename="people.csv",
        content=content.encode(),
        enqueue=enqueue,
    )


def test_import_reports_each_bad_row_with_its_line_and_field_and_imports_the_rest(world):
    program = f.ProgramFactory(tenant=world.a)
    job = make_job(program)

    job = services.participant_import_run(participant_import=job, actor=system_actor(world.a), batch_size=3)

    assert job.status == ImportStatus.DONE and job.percent_done == 100
    assert (job.total_rows, job.processed_rows) == (7, 7)
    assert (job.created_count, job.updated_count, job.error_count) == (2, 1, 4)
    assert [(e["line"], e["field"]) for e in job.errors] == [(3, "name"), (4, "email"), (7, "external_id"), (8, "row")]
    assert sorted(Participant.objects.values_list("external_id", "name")) == [
        ("c1", "Ann A. Archer"),
        ("c4", "Dee\nDoe"),
    ]
    assert all(p.source == "import" for p in Participant.objects.all())


def test_import_runs_in_batches_and_reports_progress_after_each(world):
    program = f.ProgramFactory(tenant=world.a)
    rows = "".join(f"x{n},Person {n},p{n}@acme.example\n" for n in range(7))
    job = make_job(program, "external_id,name,email\n" + rows)
    seen = []

    services.participant_import_run(
        participant_import=job,
        actor=system_actor(world.a),
        batch_size=3,
        on_progress=lambda current: seen.append((current.status, current.processed_rows)),
    )

    assert seen == [("running", 0), ("running", 3), ("running", 6), ("running", 7), ("done", 7)]
    assert Participant.objects.count() == 7


def test_a_crashed_import_resumes_after_the_last_committed_batch_without_duplicates(world):
    program = f.ProgramFactory(tenant=world.a)
    rows = "".join(f"x{n},Person {n},p{n}@acme.example\n" for n in range(5))
    job = make_job(program, "external_id,name,email\n" + rows)

    def crash_after_first_batch(current):
        if current.processed_rows == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        services.participant_import_run(
            participant_import=job, actor=system_actor(world.a), batch_size=2, on_progress=crash_after_first_batch
        )
    job.refresh_from_db()
    assert (job.status, job.processed_rows, Participant.objects.count()) == ("running", 2, 2)

    job = services.participant_import_run(participant_import=job, actor=system_actor(world.a), batch_size=2)

    assert (job.status, job.processed_rows, job.created_count, job.updated_count) == ("done", 5, 5, 0)
    assert Participant.objects.count() == 5


def test_a_finished_import_run_again_changes_nothing(world):
    program = f.ProgramFactory(tenant=world.a)
    job = services.participant_import_run(participant_import=make_job(program), actor=system_actor(world.a))
    finished_at = job.finished_at

    again = services.participant_import_run(participant_import=job, actor=system_actor(world.a))

    assert again.finished_at == finished_at and again.created_count == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,email\nAnn,ann@acme.example\n", "Line 1: the header lacks the column(s) external_id."),
        (b"external_id,name,email\n", "The file has a header but no rows."),
        (b"external_id,name,email\nx,\xff\xfe,a@b.example\n", "The file is not UTF-8 text"),
    ],
    ids=["missing-column", "no-rows", "not-utf8"],
)
def test_an_unusable_file_is_refused_whole_and_nothing_is_stored(world, content, message):
    program = f.ProgramFactory(tenant=world.a)
    with pytest.raises(ValidationError) as caught:
        services.participant_import_create(
            tenant=world.a,
            program=program,
            actor=system_actor(world.a),
            filename="x.csv",
            content=content,
            enqueue=False,
        )
    assert message in " ".join(caught.value.message_dict["file"])
    assert not ParticipantImport.objects.exists()


def test_an_oversized_file_is_refused(world, settings):
    settings.PARTICIPANT_IMPORT_MAX_BYTES = 50
    program = f.ProgramFactory(tenant=world.a)
    with pytest.raises(ValidationError) as caught:
        make_job(program)
    assert "larger than 50 bytes" in caught.value.message_dict["file"][0]


def test_the_queued_task_imports_once_the_upload_commits(world, celery_eager, django_capture_on_commit_callbacks):
    program = f.ProgramFactory(tenant=world.a)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = make_job(program, enqueue=True)

    job.refresh_from_db()
    # the import task, then one welcome e-mail per new participant (programs/tests/test_welcome.py)
    assert len(callbacks) == 1 + job.created_count
    assert job.status == ImportStatus.DONE and job.created_count == 2


def test_an_upload_that_rolls_back_queues_nothing(world, django_capture_on_commit_callbacks):
    program = f.ProgramFactory(tenant=world.a)
    with django_capture_on_commit_callbacks(execute=False) as callbacks, pytest.raises(ValidationError):
        make_job(program, "oops\n", enqueue=True)
    assert callbacks == [] and not ParticipantImport.objects.exists()


# --- admin flow --------------------------------------------------------------------------------
def upload(client, program_pk, content=GOOD_AND_BAD):
    return client.post(
        reverse("admin:programs_participantimport_add"),
        {"program": program_pk, "file": SimpleUploadedFile("people.csv", content.encode(), "text/csv")},
    )


def test_admin_upload_queues_the_import_and_shows_its_progress(
    world, client, celery_eager, django_capture_on_commit_callbacks
):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, program.pk)

    job = ParticipantImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:programs_participantimport_change", args=[job.pk])
    page = client.get(response["Location"])
    progress = client.get(reverse("admin:programs_participantimport_progress", args=[job.pk])).json()
    assert page.status_code == 200
    content = page.content.decode()
    assert 'role="progressbar"' in content and "data-progress-url" in content
    assert progress["status"] == "done" and progress["percent"] == 100
    assert (progress["created"], progress["updated"], progress["error_count"]) == (2, 1, 4)
    assert {"line": 4, "field": "email", "message": "Enter a valid e-mail address."} in progress["errors"]
    assert job.created_by.startswith("user:")


def test_admin_upload_of_a_bad_file_shows_the_error_and_stores_nothing(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    response = upload(client, program.pk, "name\nAnn\n")

    assert response.status_code == 200
    assert "the header lacks the column(s) external_id, email" in response.content.decode()
    assert not ParticipantImport.objects.exists()


def test_admin_import_form_offers_and_accepts_only_the_tenants_programs(world, client):
    own = f.ProgramFactory(tenant=world.a, name="Own program qq1")
    foreign = f.ProgramFactory(tenant=world.b, name="Foreign program qq2")
    client.force_login(world.marketer_a)

    form_page = client.get(reverse("admin:programs_participantimport_add")).content.decode()
    posted = upload(client, foreign.pk)

    assert own.name in form_page and foreign.name not in form_page
    assert posted.status_code == 200 and "Select a valid choice" in posted.content.decode()
    assert not ParticipantImport.objects.exists()


def test_tenant_b_cannot_read_tenant_a_import_progress(world, client):
    job = f.ParticipantImportFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.marketer_b)

    progress = client.get(reverse("admin:programs_participantimport_progress", args=[job.pk]))
    page = client.get(reverse("admin:programs_participantimport_change", args=[job.pk]))

    assert progress.status_code == 404 and page.status_code == 404
    assert job.filename.encode() not in progress.content + page.content


def test_a_viewer_can_watch_but_not_upload(world, client):
    job = f.ParticipantImportFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.viewer_a)

    assert client.get(reverse("admin:programs_participantimport_progress", args=[job.pk])).status_code == 200
    assert upload(client, job.program_id).status_code == 403
    assert ParticipantImport.objects.count() == 1


# --- management command ------------------------------------------------------------------------
def test_import_participants_command_shows_progress_and_bad_rows(world, tmp_path, capsys):
    program = f.ProgramFactory(tenant=world.a, slug="customers")
    path = tmp_path / "people.csv"
    path.write_text(GOOD_AND_BAD)

    call_command("import_participants", "tenant-a/customers", str(path), "--batch-size", "4")

    out = capsys.readouterr().out
    assert "Importing 7 row(s)" in out
    assert "[#################.............] 4/7 rows (57 %)" in out
    assert "7/7 rows (100 %)" in out
    assert "line 3, name: This field is required." in out
    assert "Done: 2 new, 1 updated, 4 row(s) with errors." in out
    assert Participant.objects.filter(program=program).count() == 2


def test_import_participants_command_rejects_unknown_programs_and_files(world, tmp_path):
    f.ProgramFactory(tenant=world.a, slug="customers")
    path = tmp_path / "people.csv"
    path.write_text("name\nAnn\n")

    with pytest.raises(CommandError, match="No program"):
        call_command("import_participants", "tenant-a/nope", str(path))
    with pytest.raises(CommandError, match="No file"):
        call_command("import_participants", "tenant-a/customers", str(tmp_path / "missing.csv"))
    with pytest.raises(CommandError, match="header lacks"):
        call_command("import_participants", "tenant-a/customers", str(path))
    assert not ParticipantImport.objects.exists()
