"""The redirect's local fast path (referrals/click_spool.py): links remembered in the process, clicks spooled
to a local file before the 302 and shipped to the click stream; nothing lost (killed workers, concurrent
shipping), nothing written twice, a changed link not answered from memory for longer than promised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from programs.models import ProgramStatus
from referrals import click_spool, hot_redis, link_cache
from referrals.click_buffer import clicks_flush, stream_click_keys
from referrals.models import Click, ReferralLink
from tests import factories as f

from .test_click_flush import _database_url_of_this_test_run
from .test_redirect import call_wsgi, header

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spool_dir(tmp_path, settings):
    """The fast path on, in this test's own directory; the shipper thread idle (the tests ship by hand)."""
    directory = tmp_path / "spool"
    settings.REFERRAL_CLICK_SPOOL_DIR = str(directory)
    settings.REFERRAL_CLICK_SPOOL_SHIP_SECONDS = 3600
    click_spool.spool_stop()
    yield directory
    click_spool.spool_stop()


def stream_clicks(redis_client) -> list[str]:
    """The stream ids of every click in the stream (a spooled batch is one entry holding many)."""
    return stream_click_keys(redis_client)


def spooled_lines(directory: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("*.spool"))


def shipper_started() -> None:
    """Wait for this process's shipper to finish its start-up adoption (so it cannot race a test's own)."""
    assert click_spool._state.started.wait(30), "the shipper thread did not start"


def link_ids(link) -> bytes:
    """The ids a cache entry (and so a spooled click) names for ``link``."""
    return f"{link.tenant_id}:{link.pk}:{link.program_id}:{link.participant_id}:{link.channel}".encode()


def redirect(link, **kwargs) -> str:
    status, headers, _body = call_wsgi(f"/r/{link.code}", **kwargs)
    assert status == 302
    return header(headers, "Location")


@pytest.mark.django_db(transaction=True)
def test_a_link_seen_once_is_answered_from_memory_with_its_click_spooled_then_shipped_and_written_once(
    live_link, spool_dir, redis_client
):
    first = redirect(live_link)  # the round trip: entry read from Postgres, cached, click in the stream
    assert len(stream_clicks(redis_client)) == 1
    before = time.time()

    with CaptureQueriesContext(connection) as queries:
        answers = [redirect(live_link, query="utm_source=mail") for _ in range(3)]

    # No round trip: the redirect's script would have put each click in the stream (Redis's own command
    # counters are the server's, shared with the suite's other processes, so they cannot tell).
    assert len(queries) == 0
    assert all(answer.split("vid=")[0] == first.split("vid=")[0] for answer in answers)
    assert len(stream_clicks(redis_client)) == 1 and spooled_lines(spool_dir) == 3, "the clicks are in the spool"

    assert click_spool.ship_once() == 3
    assert spooled_lines(spool_dir) == 0, "a fully shipped spool is emptied"
    assert len(stream_clicks(redis_client)) == 4
    result = clicks_flush()
    assert (result.read, result.written, result.malformed) == (4, 4, 0)
    spooled = Click.objects.exclude(stream_id__regex=r"^\d+-\d+$")
    assert spooled.count() == 3
    for click in spooled:
        assert (click.tenant_id, click.link_id, click.program_id) == (
            live_link.tenant_id,
            live_link.pk,
            live_link.program_id,
        )
        assert click.utm == {"utm_source": "mail"}
        # The request's time, not the ship's.
        assert before - 1 <= click.occurred_at.timestamp() <= time.time()


@pytest.mark.django_db(transaction=True)
def test_clicks_shipped_twice_are_written_once(live_link, spool_dir, redis_client):
    redirect(live_link)
    for _ in range(5):
        redirect(live_link)
    spool_file = next(spool_dir.glob("*.spool"))
    data = spool_file.read_bytes()

    click_spool.ship_once()
    # A shipper killed after its XADD but before forgetting what it shipped sends the same lines again.
    assert click_spool.ship_lines(redis_client, data) == 5

    assert len(stream_clicks(redis_client)) == 11
    clicks_flush()
    assert Click.objects.count() == 6
    assert len(set(Click.objects.values_list("stream_id", flat=True))) == 6


KILLED_WEB_WORKER = textwrap.dedent(
    """
    import os, signal, sys, django
    django.setup()
    from django.conf import settings
    settings.REFERRAL_CLICK_SPOOL_DIR = os.environ["SPOOL_DIR"]
    settings.REFERRAL_CLICK_SPOOL_SHIP_SECONDS = 3600
    from tests.wsgi import wsgi_request
    answered = 0
    for _ in range(int(os.environ["CLICKS"])):
        path = "/r/" + os.environ["CODE"]
        status, headers, body = wsgi_request("GET", path, HTTP_USER_AGENT="Mozilla/5.0 Chrome/126")
        answered += status == 302
    print("answered", answered, flush=True)
    if os.environ.get("WAIT"):
        sys.stdin.readline()  # alive, holding its spool, until the test kills it
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _web_worker(link, spool_dir: Path, clicks: int, *, wait: bool = False) -> subprocess.Popen:
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.test",
        DATABASE_URL=_database_url_of_this_test_run(),
        DATABASE_OWNER_URL=_database_url_of_this_test_run(),
        CACHE_KEY_PREFIX=settings.REFERRAL_REDIS_PREFIX,
        SPOOL_DIR=str(spool_dir),
        CLICKS=str(clicks),
        CODE=link.code,
        WAIT="1" if wait else "",
    )
    return subprocess.Popen(
        [sys.executable, "-c", KILLED_WEB_WORKER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.django_db(transaction=True)
def test_a_killed_web_workers_spool_is_adopted_and_every_answered_click_written_once(
    live_link, spool_dir, redis_client
):
    worker = _web_worker(live_link, spool_dir, 40)
    stdout, stderr = worker.communicate(timeout=120)

    assert worker.returncode == -signal.SIGKILL, stderr
    assert "answered 40" in stdout
    # One click took the round trip (the worker's first sight of the link); 39 are only in its spool.
    assert len(stream_clicks(redis_client)) == 1 and spooled_lines(spool_dir) == 39

    call_command("click_spool_ship", stdout=open(os.devnull, "w"))  # noqa: SIM115

    assert list(spool_dir.glob("*.spool")) == [], "an adopted spool is removed once shipped"
    clicks_flush()
    assert Click.objects.filter(link=live_link).count() == 40
    assert click_spool.spool_adopt_orphans(str(spool_dir)) == 0, "adopting again finds nothing"


NEXT_WEB_WORKER = textwrap.dedent(
    """
    import os, time, django
    django.setup()
    from django.conf import settings
    settings.REFERRAL_CLICK_SPOOL_DIR = os.environ["SPOOL_DIR"]
    settings.REFERRAL_CLICK_SPOOL_SHIP_SECONDS = 3600  # adopted at the shipper's start, not after a period
    from tests.wsgi import wsgi_request
    status, headers, body = wsgi_request("GET", "/no-such-page/")
    print("status", status, flush=True)
    deadline = time.monotonic() + 30
    while len(os.listdir(os.environ["SPOOL_DIR"])) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    """
)


@pytest.mark.django_db(transaction=True)
def test_the_next_web_process_adopts_a_killed_workers_spool_on_its_first_request_of_any_path(
    live_link, spool_dir, redis_client
):
    killed = _web_worker(live_link, spool_dir, 25)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL and spooled_lines(spool_dir) == 24

    env = dict(os.environ, CACHE_KEY_PREFIX=settings.REFERRAL_REDIS_PREFIX, SPOOL_DIR=str(spool_dir))
    env["DATABASE_URL"] = env["DATABASE_OWNER_URL"] = _database_url_of_this_test_run()
    env["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"
    following = subprocess.run(
        [sys.executable, "-c", NEXT_WEB_WORKER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert following.returncode == 0, following.stderr
    assert "status 404" in following.stdout
    assert list(spool_dir.glob("*.spool")) == [], "adopted, and the clean exit removed its own file"
    clicks_flush()
    assert Click.objects.filter(link=live_link).count() == 25


@pytest.mark.django_db(transaction=True)
def test_a_live_workers_spool_is_never_adopted(live_link, spool_dir, redis_client):
    worker = _web_worker(live_link, spool_dir, 10, wait=True)
    try:
        assert worker.stdout.readline().strip() == "answered 10"
        redirect(live_link)
        redirect(live_link)  # this process's own spool holds one click
        shipper_started()

        assert click_spool.spool_adopt_orphans(str(spool_dir)) == 0
        assert spooled_lines(spool_dir) == 9 + 1
    finally:
        worker.kill()
        worker.communicate(timeout=60)

    assert click_spool.spool_adopt_orphans(str(spool_dir)) == 9
    assert spooled_lines(spool_dir) == 1, "this process's own spool is not adopted while it lives"
    click_spool.ship_once()
    clicks_flush()
    assert Click.objects.filter(link=live_link).count() == 10 + 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_while_the_spool_is_shipped_lose_and_duplicate_nothing(live_link, spool_dir, redis_client):
    redirect(live_link)
    done = threading.Event()
    errors = []

    def clicks():
        try:
            for _ in range(150):
                redirect(live_link)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def ship():
        while not done.is_set():
            click_spool.ship_once()

    shipper = threading.Thread(target=ship)
    shipper.start()
    threads = [threading.Thread(target=clicks) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    shipper.join()
    click_spool.ship_once()

    assert errors == []
    keys = stream_clicks(redis_client)
    assert len(keys) == 1 + 4 * 150 and len(set(keys)) == len(keys)
    assert spooled_lines(spool_dir) == 0


@pytest.mark.django_db(transaction=True)
def test_a_link_changed_in_this_process_stops_being_answered_from_memory_at_once(live_link, spool_dir):
    redirect(live_link)
    redirect(live_link)
    assert click_spool.local_entry(live_link.code) is not None

    live_link.is_active = False
    live_link.save()  # committed: the invalidation runs

    assert click_spool.local_entry(live_link.code) is None
    status, _headers, _body = call_wsgi(f"/r/{live_link.code}")
    assert status == 404


@pytest.mark.django_db(transaction=True)
def test_a_link_changed_by_another_process_stops_being_answered_from_memory_within_the_confirm_interval(
    live_link, spool_dir, redis_client, settings
):
    redirect(live_link)
    # Another process deactivates the link: its invalidation marks the Redis entry, this process's memory
    # learns it only from Redis.
    ReferralLink.objects.filter(pk=live_link.pk).update(is_active=False)
    redis_client.set(hot_redis.link_key(live_link.code), link_cache.CHANGED, ex=5)

    redirect(live_link)  # still remembered: within the promised bound
    assert click_spool.local_links_confirm(redis_client) == 1

    status, _headers, _body = call_wsgi(f"/r/{live_link.code}")
    assert status == 404
    assert click_spool.local_entry(live_link.code) is None


@pytest.mark.django_db(transaction=True)
def test_an_entry_not_confirmed_for_twice_the_interval_is_never_used(live_link, spool_dir, redis_client, settings):
    settings.REFERRAL_LINK_LOCAL_SECONDS = 0.05
    redirect(live_link)
    assert click_spool.local_entry(live_link.code) is not None
    in_stream, spooled = len(stream_clicks(redis_client)), spooled_lines(spool_dir)

    time.sleep(0.15)  # the shipper thread is idle: nothing confirms the entry

    assert click_spool.local_entry(live_link.code) is None
    redirect(live_link)
    # the round trip's script put the click in the stream; nothing was spooled
    assert (len(stream_clicks(redis_client)), spooled_lines(spool_dir)) == (in_stream + 1, spooled), (
        "a stale entry must take the round trip"
    )


@pytest.mark.django_db(transaction=True)
def test_a_spool_that_cannot_be_written_falls_back_to_the_round_trip(live_link, spool_dir, redis_client):
    redirect(live_link)
    redirect(live_link)
    os.close(click_spool._state.spool.fd)  # the disk gone from under the process
    try:
        redirect(live_link)
        assert len(stream_clicks(redis_client)) == 2, "the click went to Redis instead"
    finally:
        click_spool._state.spool.closed = True  # its descriptor is gone: nothing left to ship or close
        click_spool._state.spool.fd = os.open(os.devnull, os.O_RDONLY)


@pytest.mark.django_db(transaction=True)
def test_a_spooled_click_belongs_to_the_tenant_of_its_link_and_a_forged_line_writes_nothing(
    world, live_link, spool_dir, redis_client
):
    other_program = f.ProgramFactory(
        tenant=world.b, status=ProgramStatus.ACTIVE, landing_url=f"https://{world.b.slug}.example/join?ref=x"
    )
    other_link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=other_program), code="OtherCode_B1")
    for link in (live_link, other_link):
        redirect(link)
        redirect(link)
    click_spool.ship_once()
    # A line naming tenant B with tenant A's link (a tampered spool file): the flush joins link and tenant.
    forged = click_spool.spool_line(
        click_spool.click_key(),
        f"{world.b.pk}:{live_link.pk}:{live_link.program_id}:{live_link.participant_id}:email".encode(),
        "LiveCode_A1b2\x1fvisitor-0000000000000\x1f203.0.113.9\x1fMozilla\x1f\x1f",
    )
    click_spool.ship_lines(redis_client, forged + b"not a click line\n")

    result = clicks_flush()

    assert result.written == 4
    assert sorted(Click.objects.values_list("tenant_id", "link_id")) == sorted(
        [(world.a.pk, live_link.pk)] * 2 + [(world.b.pk, other_link.pk)] * 2
    )


def test_malformed_spool_lines_are_skipped_and_well_formed_ones_kept():
    good = click_spool.spool_line("1764000000000-s0123456789abcdef", b"1:2:3:4:email", "code\x1fv\x1f\x1f\x1f\x1f")
    bad_key, bad_click = b"123-sXYZ\x1e1:2\n", b"1764000000000-s0123456789abcdef\x1eno\n"
    lines = click_spool.parse_lines(b"garbage\n" + good + bad_key + bad_click)

    assert lines == [(b"1764000000000-s0123456789abcdef", good.split(b"\x1e", 1)[1].rstrip(b"\n"))]


def test_a_newline_in_a_header_cannot_split_a_spooled_click():
    line = click_spool.spool_line(click_spool.click_key(), b"1:2:3:4:email", "code\x1fv\x1fip\x1fagent\nX\x1f\x1f")

    assert line.count(b"\n") == 1 and len(click_spool.parse_lines(line)) == 1


def test_the_ship_command_refuses_without_a_directory(settings):
    from django.core.management.base import CommandError

    settings.REFERRAL_CLICK_SPOOL_DIR = ""
    with pytest.raises(CommandError, match="REFERRAL_CLICK_SPOOL_DIR"):
        call_command("click_spool_ship")


@pytest.mark.django_db(transaction=True)
def test_the_flush_sizes_its_reads_to_hold_about_a_batch_of_clicks_when_entries_are_spooled_batches(
    live_link, redis_client
):
    ids = link_ids(live_link)
    lines = b"".join(
        click_spool.spool_line(
            click_spool.click_key(), ids, f"{live_link.code}\x1fvisitor-{n:016d}\x1f\x1fMozilla\x1f\x1f"
        )
        for n in range(300 * click_spool.SHIP_CHUNK)
    )
    assert click_spool.ship_lines(redis_client, lines) == 15_000
    assert redis_client.xlen(hot_redis.click_stream_key()) == 300

    result = clicks_flush(batch_size=100)

    # The first read takes 100 entries (5,000 clicks); the next ones 2 entries, 100 clicks each.
    assert (result.read, result.written, result.batches) == (15_000, 15_000, 1 + 100)
    assert Click.objects.count() == 15_000


@pytest.mark.django_db(transaction=True)
def test_while_redis_is_unreachable_spooled_clicks_wait_in_the_file_and_the_shipper_backs_off(
    live_link, spool_dir, redis_client, settings, caplog
):
    settings.REFERRAL_CLICK_SPOOL_SHIP_SECONDS = 0.01
    reachable = settings.REFERRAL_REDIS_URL
    settings.REFERRAL_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    ids = link_ids(live_link)
    with caplog.at_level("ERROR", logger="referrals.click_spool"):
        for n in range(5):
            assert click_spool.spool_click(ids, f"{live_link.code}\x1fvisitor-{n:016d}\x1f\x1fMozilla\x1f\x1f")
        time.sleep(1.0)  # unbacked, 100 attempts

    assert spooled_lines(spool_dir) == 5
    failures = [record for record in caplog.records if "shipping failed" in record.getMessage()]
    assert len(failures) == 1, "one log line, not one per attempt"

    settings.REFERRAL_REDIS_URL = reachable  # Redis is back: nothing was lost meanwhile
    assert click_spool.ship_once(client=redis_client) == 5
    clicks_flush()
    assert Click.objects.filter(link=live_link).count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_spool_that_grew_large_is_shipped_a_bounded_read_at_a_time_every_click_once(
    live_link, spool_dir, redis_client, monkeypatch
):
    monkeypatch.setattr(click_spool, "READ_LIMIT", 1_000)  # a few lines per read
    redirect(live_link)
    for _ in range(40):
        redirect(live_link)
    assert spooled_lines(spool_dir) == 40

    rounds = 0
    while spooled_lines(spool_dir):
        click_spool.ship_once()
        rounds += 1
        assert rounds < 100

    assert rounds > 5, "each ship read at most READ_LIMIT bytes"
    keys = stream_clicks(redis_client)
    assert len(keys) == 41 and len(set(keys)) == 41

    # An orphaned file is adopted a bounded read at a time too.
    shipper_started()
    orphan = spool_dir / "dead-host-1-00000000.spool"
    ids = link_ids(live_link)
    orphan.write_bytes(
        b"".join(
            click_spool.spool_line(click_spool.click_key(), ids, f"{live_link.code}\x1fv{n:020d}\x1f\x1fUA\x1f\x1f")
            for n in range(30)
        )
    )
    assert click_spool.spool_adopt_orphans(str(spool_dir)) == 30
    assert not orphan.exists()
    clicks_flush()
    assert Click.objects.filter(link=live_link).count() == 71


@pytest.mark.django_db(transaction=True)
def test_with_the_fast_path_on_bad_requests_are_refused_and_spool_nothing(live_link, spool_dir, redis_client):
    redirect(live_link)
    redirect(live_link)  # the link is remembered; the spool holds one click
    other = f.ReferralLinkFactory(participant=live_link.participant, code="Inactive_Code1", is_active=False)

    answers = [
        call_wsgi("/r/NoSuchCode_123")[0],
        call_wsgi("/r/NoSuchCode_123")[0],  # a cached miss: still not remembered
        call_wsgi(f"/r/{other.code}")[0],
        call_wsgi(f"/r/{live_link.code}", method="POST")[0],
        call_wsgi(f"/r/{live_link.code}", method="HEAD")[0],
    ]

    assert answers == [404, 404, 404, 405, 302]
    assert spooled_lines(spool_dir) == 1, "only the GET of a live link is a click"
    assert click_spool.local_entry("NoSuchCode_123") is None and click_spool.local_entry(other.code) is None
    assert len(stream_clicks(redis_client)) == 1
