"""Flushing the click stream into Postgres: batches, exactly once across crashes, bots, tenancy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from referrals import click_buffer, hot_redis, selectors
from referrals.click_buffer import BatchReader, clicks_flush, write_batch
from referrals.models import Click
from referrals.tasks import flush_clicks
from tests import factories as f
from tests.app_role import as_table_owner

from .test_redirect import CHROME, call_wsgi

ROOT = Path(__file__).resolve().parents[2]


def click_many(link, count: int, *, user_agent: str = CHROME) -> None:
    for _ in range(count):
        status, _headers, _body = call_wsgi(f"/r/{link.code}", query="utm_source=mail", user_agent=user_agent)
        assert status == 302


def buffered_ids(redis_client) -> list[str]:
    return [entry_id.decode() for entry_id, _ in redis_client.xrange(hot_redis.click_stream_key())]


def written_ids() -> list[str]:
    return sorted(Click.objects.values_list("stream_id", flat=True))


def pending_count(redis_client) -> int:
    return redis_client.xpending(hot_redis.click_stream_key(), click_buffer.GROUP)["pending"]


@pytest.mark.django_db(transaction=True)
def test_flush_writes_every_buffered_click_once_and_empties_the_stream(live_link, redis_client):
    click_many(live_link, 25)
    expected = sorted(buffered_ids(redis_client))

    result = clicks_flush(batch_size=10)

    assert (result.read, result.written, result.batches) == (25, 25, 3)
    assert written_ids() == expected
    assert redis_client.xlen(hot_redis.click_stream_key()) == 0, "acknowledged entries were not trimmed"
    assert pending_count(redis_client) == 0
    click = Click.objects.first()
    assert (click.tenant_id, click.program_id, click.participant_id, click.channel) == (
        live_link.tenant_id,
        live_link.program_id,
        live_link.participant_id,
        live_link.channel,
    )
    assert click.utm == {"utm_source": "mail"} and click.user_agent == CHROME and str(click.ip) == "203.0.113.7"
    assert click.occurred_at is not None and not click.is_bot


@pytest.mark.django_db(transaction=True)
def test_flush_after_a_crash_between_commit_and_ack_writes_no_click_twice(live_link, redis_client):
    click_many(live_link, 30)
    expected = sorted(buffered_ids(redis_client))
    doomed = BatchReader(consumer="doomed", batch_size=20, claim_idle_ms=60_000)
    batch = doomed.next_batch()
    write_batch(batch)  # committed ...
    # ... and the process dies here, before XACK.
    assert len(written_ids()) == 20 and pending_count(redis_client) == 20

    result = clicks_flush(claim_idle_ms=0)

    assert written_ids() == expected, "a click was lost or duplicated"
    assert (result.read, result.written, result.skipped) == (30, 10, 20)
    assert pending_count(redis_client) == 0 and redis_client.xlen(hot_redis.click_stream_key()) == 0


@pytest.mark.django_db(transaction=True)
def test_flush_after_a_crash_before_commit_loses_no_click(live_link, redis_client):
    click_many(live_link, 12)
    expected = sorted(buffered_ids(redis_client))
    doomed = BatchReader(consumer="doomed", batch_size=50, claim_idle_ms=60_000)
    batch = doomed.next_batch()
    with pytest.raises(RuntimeError), transaction.atomic():
        write_batch(batch)
        raise RuntimeError("worker lost before commit")
    assert written_ids() == []

    clicks_flush(claim_idle_ms=0)

    assert written_ids() == expected


@pytest.mark.django_db(transaction=True)
def test_entries_of_a_live_flush_are_not_taken_over_before_the_idle_time(live_link, redis_client):
    click_many(live_link, 5)
    BatchReader(consumer="busy", batch_size=50, claim_idle_ms=60_000).next_batch()

    result = clicks_flush(claim_idle_ms=60_000)

    assert result.read == 0 and written_ids() == []
    assert redis_client.xlen(hot_redis.click_stream_key()) == 5, "entries still pending were trimmed"


KILLED_FLUSH = textwrap.dedent(
    """
    import os, signal, django
    django.setup()
    from referrals.click_buffer import BatchReader, write_batch
    reader = BatchReader(consumer="killed", batch_size=int(os.environ["BATCH"]), claim_idle_ms=60_000)
    write_batch(reader.next_batch())
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.django_db(transaction=True)
def test_flush_process_killed_after_commit_then_rerun_loses_and_duplicates_nothing(live_link, redis_client):
    click_many(live_link, 40)
    expected = sorted(buffered_ids(redis_client))
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.test",
        DATABASE_URL=_database_url_of_this_test_run(),
        DATABASE_OWNER_URL=_database_url_of_this_test_run(),  # test settings prefer it (embedded devstack)
        CACHE_KEY_PREFIX=settings.REFERRAL_REDIS_PREFIX,
        BATCH="25",
    )

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_FLUSH], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "committed" in killed.stdout
    assert len(written_ids()) == 25 and pending_count(redis_client) == 25
    clicks_flush(claim_idle_ms=0)
    assert written_ids() == expected
    assert Click.objects.count() == 40


def _database_url_of_this_test_run() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_concurrent_flushes_stealing_each_others_entries_write_each_click_once(live_link, redis_client):
    click_many(live_link, 300)
    expected = sorted(buffered_ids(redis_client))
    errors = []

    def flush():
        try:
            # claim_idle_ms=0: every flusher takes over the others' in-flight entries at once.
            clicks_flush(batch_size=7, claim_idle_ms=0)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=flush) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert written_ids() == expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Twitterbot/1.0",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "curl/8.5.0",
        "Wget/1.21.3",
        "python-requests/2.32.3",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0 Safari/537.36",
        "",
    ],
)
def test_bot_clicks_are_stored_flagged_and_not_counted(live_link, user_agent):
    click_many(live_link, 2)
    click_many(live_link, 3, user_agent=user_agent)

    result = clicks_flush()

    assert (result.written, result.bots) == (5, 3)
    assert Click.objects.filter(is_bot=True).count() == 3
    assert selectors.click_count(tenant=live_link.tenant_id) == 2
    assert selectors.click_count(tenant=live_link.tenant_id, link_id=live_link.pk) == 2


@pytest.mark.django_db(transaction=True)
def test_clicks_of_two_tenants_are_written_each_to_its_own_tenant(world):
    link_a = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    link_b = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b)))
    click_many(link_a, 3)
    click_many(link_b, 2)

    clicks_flush()

    assert sorted(Click.objects.filter(tenant=world.a).values_list("link_id", flat=True)) == [link_a.pk] * 3
    assert sorted(Click.objects.filter(tenant=world.b).values_list("link_id", flat=True)) == [link_b.pk] * 2
    assert selectors.click_count(tenant=world.a) == 3 and selectors.click_count(tenant=world.b) == 2


@pytest.mark.django_db(transaction=True)
def test_entry_naming_another_tenants_link_is_not_written(world, redis_client):
    link_a = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    forged = f"{world.b.pk}:{link_a.pk}:{link_a.program_id}:{link_a.participant_id}:direct"
    redis_client.xadd(hot_redis.click_stream_key(), {"c": "\x1f".join([forged, link_a.code, "v" * 22, "", "", "", ""])})

    result = clicks_flush()

    assert (result.read, result.written, result.skipped) == (1, 0, 1)
    assert not Click.objects.exists()
    assert redis_client.xlen(hot_redis.click_stream_key()) == 0, "a skipped entry must not block the stream"


@pytest.mark.django_db(transaction=True)
def test_malformed_entries_and_clicks_of_deleted_links_are_dropped_not_retried(live_link, redis_client):
    click_many(live_link, 2)
    stream = hot_redis.click_stream_key()
    redis_client.xadd(stream, {"c": "garbage"})
    redis_client.xadd(stream, {"other": "field"})
    redis_client.xadd(stream, {"c": "0:0:0:0:direct\x1fcode\x1fvisitor\x1fnot-an-ip\x1f\x00ua\x1fref\x1fq"})

    result = clicks_flush()

    assert (result.read, result.written, result.malformed, result.skipped) == (5, 2, 2, 1)
    assert redis_client.xlen(stream) == 0


@pytest.mark.django_db(transaction=True)
def test_flush_keeps_odd_but_valid_text_intact(live_link, redis_client):
    odd_agent = 'Mozilla/5.0 "quoted", comma\ttab \\backslash ünïcødé'
    call_wsgi(f"/r/{live_link.code}", query="utm_source=a%2Cb&utm_term=%22x%22", user_agent=odd_agent)

    clicks_flush()

    click = Click.objects.get()
    assert click.user_agent == odd_agent
    assert click.utm == {"utm_source": "a,b", "utm_term": '"x"'}


@pytest.mark.django_db(transaction=True)
def test_flush_clicks_command_drains_the_stream_with_a_progress_line(live_link, redis_client, capsys):
    click_many(live_link, 12)

    call_command("flush_clicks", "--batch-size", "5")

    out, err = capsys.readouterr()
    assert "12 stream entries waiting" in err and "100%" in err and "clicks/s" in err
    assert "flushed 12 clicks" in out
    assert Click.objects.count() == 12 and redis_client.xlen(hot_redis.click_stream_key()) == 0


@pytest.mark.django_db(transaction=True)
def test_beat_task_flushes_and_is_scheduled(live_link):
    click_many(live_link, 4)

    outcome = flush_clicks()

    assert outcome["written"] == 4 and Click.objects.count() == 4
    schedule = settings.CELERY_BEAT_SCHEDULE["referrals-flush-clicks"]
    assert schedule["task"] == flush_clicks.name and schedule["schedule"] <= 10


@pytest.mark.django_db(transaction=True)
def test_beat_task_skips_while_another_flush_holds_the_lock(live_link, redis_client):
    click_many(live_link, 3)
    lock = redis_client.lock(hot_redis.key("clicks", "flush-lock"), timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert flush_clicks() == {"skipped": "another flush is running"}
    finally:
        lock.release()

    assert not Click.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_postgres_rejects_stays_pending_and_is_written_on_the_next_run(live_link, redis_client):
    click_many(live_link, 8)
    expected = sorted(buffered_ids(redis_client))
    with as_table_owner(), connection.cursor() as cursor:  # a fault only the tables' owner can inject
        cursor.execute(
            "CREATE FUNCTION reject_clicks() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$;"
            "CREATE TRIGGER reject_clicks BEFORE INSERT ON referrals_click "
            "FOR EACH ROW EXECUTE FUNCTION reject_clicks()"
        )
    try:
        with pytest.raises(Exception, match="disk full"):
            clicks_flush(batch_size=3)
        assert written_ids() == []
        assert redis_client.xlen(hot_redis.click_stream_key()) == 8, "unwritten entries were trimmed"
    finally:
        with as_table_owner(), connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER reject_clicks ON referrals_click; DROP FUNCTION reject_clicks()")

    clicks_flush(claim_idle_ms=0)

    assert written_ids() == expected


@pytest.mark.django_db(transaction=True)
def test_control_characters_in_an_entry_do_not_break_the_batch(live_link, redis_client):
    ids = f"{live_link.tenant_id}:{live_link.pk}:{live_link.program_id}:{live_link.participant_id}:email"
    agent = "line one\nline two\r\tend \\N"
    redis_client.xadd(
        hot_redis.click_stream_key(),
        {"c": "\x1f".join([ids, live_link.code, "v" * 22, "2001:db8::1", agent, "ref\\erer", "utm_source=%0A"])},
    )
    click_many(live_link, 1)

    result = clicks_flush()

    assert (result.written, result.malformed) == (2, 0)
    odd = Click.objects.get(visitor_id="v" * 22)
    assert (odd.user_agent, odd.referer, str(odd.ip), odd.utm) == (
        agent,
        "ref\\erer",
        "2001:db8::1",
        {"utm_source": "\n"},
    )
