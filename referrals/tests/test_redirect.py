"""The public redirect /r/<code>: cache, click buffer, visitor cookie, allowed destinations, 404 page."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from programs.models import ParticipantStatus, Program, ProgramStatus
from referrals import hot_redis, link_cache
from referrals.models import Click, ReferralLink
from referrals.redirect import CODE_PATH
from referrals.services import new_referral_code
from tests import factories as f
from tests.wsgi import wsgi_request

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def call_wsgi(path: str, *, query: str = "", method: str = "GET", cookie: str = "", user_agent: str = CHROME):
    """One request through the production WSGI application (the one gunicorn serves)."""
    extra = {"HTTP_USER_AGENT": user_agent, **({"HTTP_COOKIE": cookie} if cookie else {})}
    return wsgi_request(method, path, query=query, **extra)


def header(headers, name):
    values = [value for key, value in headers if key.lower() == name.lower()]
    return values[0] if values else None


def visitor_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["vid"][0]


# --- warm / cold -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_warm_link_redirects_without_any_sql_query(client, live_link, django_assert_num_queries):
    client.get(f"/r/{live_link.code}")  # cold: loads the link and caches it

    with django_assert_num_queries(0):
        response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 302
    assert urlsplit(response["Location"]).hostname == "tenant-a.example"


@pytest.mark.django_db
def test_warm_link_through_the_wsgi_entry_point_runs_no_sql_and_no_middleware(live_link):
    call_wsgi(f"/r/{live_link.code}")

    with CaptureQueriesContext(connection) as queries:
        status, headers, body = call_wsgi(f"/r/{live_link.code}")

    assert len(queries) == 0
    assert status == 302 and body == b""
    assert header(headers, "Location").startswith("https://tenant-a.example/signup?")
    # Django's middleware did not run: no clickjacking header, no session or CSRF cookie.
    assert header(headers, "X-Frame-Options") is None
    assert [value.split("=")[0] for key, value in headers if key == "Set-Cookie"] == ["rp_vid"]


@pytest.mark.django_db(transaction=True)
def test_warm_link_opens_no_database_connection(live_link):
    call_wsgi(f"/r/{live_link.code}")
    connection.close()

    status, _headers, _body = call_wsgi(f"/r/{live_link.code}")

    assert status == 302
    assert connection.connection is None, "a warm redirect opened a database connection"


@pytest.mark.django_db(transaction=True)
def test_only_a_cold_link_does_the_connection_housekeeping(live_link, redis_client, monkeypatch):
    """Django's close_old_connections runs around the database work of a cold link (with CONN_MAX_AGE=0 the
    connection is closed after it); a warm hit uses no database and leaves connections alone."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    redis_client.delete(hot_redis.link_key(live_link.code))
    connection.close()
    connection.ensure_connection()
    assert call_wsgi(f"/r/{live_link.code}")[0] == 302  # cold: read from PostgreSQL, then cached
    assert connection.connection is None, "the cold link's connection housekeeping closed the expired connection"
    connection.ensure_connection()
    opened = connection.connection
    assert call_wsgi(f"/r/{live_link.code}")[0] == 302  # warm
    assert connection.connection is opened, "a warm hit touches no connection"


@pytest.mark.django_db
def test_redirect_middleware_skips_the_rest_of_the_stack(client, live_link):
    response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 302
    assert "X-Frame-Options" not in response.headers
    assert set(response.cookies) == {"rp_vid"}
    assert not hasattr(response.wsgi_request, "session"), "SessionMiddleware ran for the redirect"
    assert not hasattr(response.wsgi_request, "user")
    # The rest of the site keeps its middleware.
    assert client.get("/").headers.get("X-Frame-Options") == "DENY"


@pytest.mark.django_db
def test_cold_link_is_loaded_with_one_query_and_cached(client, live_link, redis_client, django_assert_num_queries):
    assert redis_client.get(hot_redis.link_key(live_link.code)) is None

    with django_assert_num_queries(1):
        response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 302
    cached = redis_client.get(hot_redis.link_key(live_link.code))
    assert cached.startswith(f"{world_ids(live_link)}\n".encode())
    assert 0 < redis_client.ttl(hot_redis.link_key(live_link.code)) <= 300


def world_ids(link: ReferralLink) -> str:
    return f"{link.tenant_id}:{link.pk}:{link.program_id}:{link.participant_id}:{link.channel}"


def test_route_is_named_and_reversible():
    assert reverse("referral_redirect", kwargs={"code": "Abc_123-xyz"}) == "/r/Abc_123-xyz"
    assert CODE_PATH.match("/r/Abc_123-xyz") and CODE_PATH.match("/r/Abc_123-xyz/")
    assert not CODE_PATH.match("/r/../admin/") and not CODE_PATH.match("/r/a%2Fb")


# --- destination -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_redirect_keeps_the_landing_query_and_fragment_and_appends_code_and_visitor(client, live_link):
    response = client.get(f"/r/{live_link.code}")

    location = response["Location"]
    parts = urlsplit(location)
    assert (parts.scheme, parts.hostname, parts.path, parts.fragment) == (
        "https",
        "tenant-a.example",
        "/signup",
        "pricing",
    )
    query = parse_qs(parts.query)
    assert query["plan"] == ["pro"]
    assert query["ref"] == [live_link.code], "the landing URL's stale ref= is replaced, not duplicated"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", query["vid"][0])
    assert location.startswith("https://tenant-a.example/signup?plan=pro&ref=LiveCode_A1b2&vid=")


OPEN_REDIRECT_PAYLOADS = [
    "//evil.com",
    "///evil.com",
    "\\\\evil.com",
    "/\\evil.com",
    "https:evil.com",
    "https:/evil.com",
    "https:/\\evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.domain)",
    "data:text/html,<script>alert(1)</script>",
    "https://tenant-a.example@evil.com",
    "https://tenant-a.example:443@evil.com",
    "https://evil.com:443@tenant-a.example/",
    "https://tenant-a.example%40evil.com",
    "https://tenant-a.example%2F@evil.com",
    "https://evil.com/?x=tenant-a.example",
    "https://evil.com#tenant-a.example",
    "https://evil.com/tenant-a.example",
    "https://tenant-a.example.evil.com/",
    "https://evil.com\\.tenant-a.example/",
    "https://evil.com%5C.tenant-a.example/",
    "https://evil.com%2F.tenant-a.example/",
    "https://evil.com%23.tenant-a.example/",
    "https://evil.com%3F.tenant-a.example/",
    "https://evil.com\t.tenant-a.example/",
    "https://evil.com\r\nSet-Cookie: x=1",
    "https://%65vil.com/",
    "https%3A%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "ftp://tenant-a.example/",
    "http://[::1]/",
    "https://127.0.0.1/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_redirect_style_parameters_are_ignored(client, live_link, payload):
    params = {name: payload for name in ("redirect", "redirect_to", "next", "url", "return_to", "continue", "dest")}

    response = client.get(f"/r/{live_link.code}", params)

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.scheme == "https" and location.hostname == "tenant-a.example"
    assert location.path == "/signup" and "evil" not in response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("payload", [*OPEN_REDIRECT_PAYLOADS, *(quote(p, safe="") for p in OPEN_REDIRECT_PAYLOADS[:6])])
def test_stored_landing_url_outside_allowed_domains_gets_the_404_page(client, live_link, stream, payload):
    # Written past the service's validation, as a compromised or legacy row would be.
    Program.objects.filter(pk=live_link.program_id).update(landing_url=payload)

    response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 404
    assert "Location" not in response.headers
    assert b"This referral link is not available" in response.content
    assert stream() == [], "a click was buffered for a link that does not redirect"


@pytest.mark.django_db
def test_allowed_sub_domain_landing_url_redirects(client, live_link):
    Program.objects.filter(pk=live_link.program_id).update(landing_url="https://go.tenant-a.example/x")

    response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 302
    assert response["Location"].startswith("https://go.tenant-a.example/x?ref=")


@pytest.mark.django_db
def test_cached_destination_is_rechecked_at_redirect_time(client, live_link, redis_client, stream):
    # A cache entry whose destination is not on the domains it carries (tampered or stale format).
    entry = link_cache.entry_for_link(live_link)
    ids, target = entry.split(b"\n", 1)
    redis_client.set(
        hot_redis.link_key(live_link.code), ids + b"\n" + target.replace(b"tenant-a.example/", b"evil.com/")
    )

    response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 404
    assert stream() == [], "the click appended before the re-check was not removed"


# --- not found -------------------------------------------------------------------------------


def _pause(link):
    Program.objects.filter(pk=link.program_id).update(status=ProgramStatus.PAUSED)


def _archive(link):
    Program.objects.filter(pk=link.program_id).update(status=ProgramStatus.ARCHIVED)


def _draft(link):
    Program.objects.filter(pk=link.program_id).update(status=ProgramStatus.DRAFT)


def _deactivate(link):
    ReferralLink.objects.filter(pk=link.pk).update(is_active=False)


def _remove_participant(link):
    type(link.participant).objects.filter(pk=link.participant_id).update(status=ParticipantStatus.REMOVED)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_unavailable",
    [_pause, _archive, _draft, _deactivate, _remove_participant],
    ids=["paused-program", "archived-program", "draft-program", "inactive-link", "removed-participant"],
)
def test_unavailable_link_gets_the_friendly_404_page_and_records_nothing(client, live_link, stream, make_unavailable):
    make_unavailable(live_link)

    response = client.get(f"/r/{live_link.code}")

    assert response.status_code == 404
    assert 'name="viewport"' in response.content.decode()
    assert "This referral link is not available" in response.content.decode()
    assert "rp_vid" not in response.cookies
    assert stream() == []


@pytest.mark.django_db
def test_unknown_code_gets_the_404_page_and_is_cached_briefly(client, redis_client, django_assert_num_queries, stream):
    response = client.get("/r/NoSuchCode123")

    assert response.status_code == 404
    assert b"This referral link is not available" in response.content
    assert redis_client.get(hot_redis.link_key("NoSuchCode123")) == link_cache.MISSING
    assert redis_client.ttl(hot_redis.link_key("NoSuchCode123")) <= 30
    with django_assert_num_queries(0):
        assert client.get("/r/NoSuchCode123").status_code == 404
    assert stream() == []


@pytest.mark.django_db
def test_unknown_code_via_wsgi_gets_the_404_page(live_link):
    status, headers, body = call_wsgi("/r/NoSuchCode123")

    assert status == 404
    assert header(headers, "Content-Type") == "text/html; charset=utf-8"
    assert b"This referral link is not available" in body


@pytest.mark.django_db
def test_only_get_and_head_are_answered(client, live_link, stream):
    assert client.post(f"/r/{live_link.code}").status_code == 405
    head = client.head(f"/r/{live_link.code}")

    assert head.status_code == 302
    assert stream() == [], "POST or HEAD recorded a click"


# --- visitor cookie and the buffered click ----------------------------------------------------


@pytest.mark.django_db
def test_visitor_cookie_is_set_long_lived_http_only_and_lax(client, live_link):
    response = client.get(f"/r/{live_link.code}")

    cookie = response.cookies["rp_vid"]
    assert cookie.value == visitor_of(response["Location"])
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) >= 180 * 24 * 3600
    assert cookie["path"] == "/"


@pytest.mark.django_db
def test_visitor_cookie_is_reused_on_the_next_click(client, live_link, stream):
    first = client.get(f"/r/{live_link.code}")
    second = client.get(f"/r/{live_link.code}")  # the test client sends the cookie back

    visitor = first.cookies["rp_vid"].value
    assert visitor_of(second["Location"]) == visitor
    assert second.cookies["rp_vid"].value == visitor
    assert [fields["c"].split("\x1f")[2] for _, fields in stream()] == [visitor, visitor]


@pytest.mark.django_db
def test_fresh_visitors_get_distinct_unguessable_ids(live_link):
    visitors = {visitor_of(header(call_wsgi(f"/r/{live_link.code}")[1], "Location")) for _ in range(50)}

    assert len(visitors) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", visitor) for visitor in visitors)


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["short", "x" * 65, "abc$def<script>ghijkl", "a b c d e f g h i j k"])
def test_malformed_visitor_cookie_is_replaced(live_link, bad):
    _status, headers, _body = call_wsgi(f"/r/{live_link.code}", cookie=f"rp_vid={bad}")

    visitor = visitor_of(header(headers, "Location"))
    assert visitor != bad and re.fullmatch(r"[A-Za-z0-9_-]{22}", visitor)


@pytest.mark.django_db
def test_click_is_buffered_with_its_details(client, live_link, stream):
    response = client.get(
        f"/r/{live_link.code}",
        {"utm_source": "newsletter", "utm_campaign": "spring", "redirect": "//evil.com"},
        HTTP_USER_AGENT=CHROME,
        HTTP_REFERER="https://mail.example/inbox",
        REMOTE_ADDR="198.51.100.23",
    )

    [(entry_id, fields)] = stream()
    ids, code, visitor, ip, user_agent, referer, query = fields["c"].split("\x1f")
    assert ids == world_ids(live_link)
    assert (code, visitor, ip, user_agent, referer) == (
        live_link.code,
        response.cookies["rp_vid"].value,
        "198.51.100.23",
        CHROME,
        "https://mail.example/inbox",
    )
    assert parse_qs(query)["utm_source"] == ["newsletter"]
    assert re.fullmatch(r"\d{13}-\d+", entry_id)
    assert not Click.objects.exists(), "the redirect wrote to Postgres"


@pytest.mark.django_db
@override_settings(TRUSTED_PROXY_COUNT=1)
def test_client_ip_comes_from_the_trusted_proxy_hop_when_configured(client, live_link, stream):
    client.get(f"/r/{live_link.code}", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.99", REMOTE_ADDR="10.0.0.2")

    assert stream()[0][1]["c"].split("\x1f")[3] == "198.51.100.99"


@pytest.mark.django_db
@override_settings(TRUSTED_PROXY_COUNT=2)
def test_behind_two_trusted_proxies_the_client_is_the_second_hop_from_the_right(client, live_link, stream):
    client.get(
        f"/r/{live_link.code}",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7, 10.0.0.1",  # spoofed, client (seen by proxy 1), proxy 1
        REMOTE_ADDR="10.0.0.2",
    )

    assert stream()[0][1]["c"].split("\x1f")[3] == "203.0.113.7"


# --- cache coherence -------------------------------------------------------------------------


@pytest.mark.django_db
def test_pausing_the_program_takes_effect_on_a_warm_link(client, live_link, django_capture_on_commit_callbacks):
    assert client.get(f"/r/{live_link.code}").status_code == 302
    program = live_link.program

    with django_capture_on_commit_callbacks(execute=True):
        program.status = ProgramStatus.PAUSED
        program.save()

    assert client.get(f"/r/{live_link.code}").status_code == 404


@pytest.mark.django_db
def test_changing_the_landing_url_takes_effect_on_a_warm_link(client, live_link, django_capture_on_commit_callbacks):
    client.get(f"/r/{live_link.code}")
    program = live_link.program

    with django_capture_on_commit_callbacks(execute=True):
        program.landing_url = "https://tenant-a.example/new-page"
        program.save()

    assert client.get(f"/r/{live_link.code}")["Location"].startswith("https://tenant-a.example/new-page?ref=")


@pytest.mark.django_db
def test_removing_an_allowed_domain_takes_effect_on_a_warm_link(client, live_link, django_capture_on_commit_callbacks):
    client.get(f"/r/{live_link.code}")
    tenant = live_link.tenant

    with django_capture_on_commit_callbacks(execute=True):
        tenant.allowed_landing_domains = ["other.example"]
        tenant.save()

    assert client.get(f"/r/{live_link.code}").status_code == 404


@pytest.mark.django_db
def test_deactivating_the_link_or_participant_takes_effect(client, live_link, django_capture_on_commit_callbacks):
    client.get(f"/r/{live_link.code}")
    with django_capture_on_commit_callbacks(execute=True):
        participant = live_link.participant
        participant.status = ParticipantStatus.REMOVED
        participant.save()
    assert client.get(f"/r/{live_link.code}").status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        participant.status = ParticipantStatus.ACTIVE
        participant.save()
    assert client.get(f"/r/{live_link.code}").status_code == 302

    with django_capture_on_commit_callbacks(execute=True):
        live_link.is_active = False
        live_link.save()
    assert client.get(f"/r/{live_link.code}").status_code == 404


@pytest.mark.django_db
def test_deleted_link_stops_redirecting(client, live_link, django_capture_on_commit_callbacks):
    client.get(f"/r/{live_link.code}")

    with django_capture_on_commit_callbacks(execute=True):
        live_link.delete()

    assert client.get(f"/r/{live_link.code}").status_code == 404


@pytest.mark.django_db
def test_invalidated_key_refuses_a_stale_refill(live_link, redis_client):
    link_cache.link_cache_forget_codes([live_link.code])

    entry = link_cache.load_entry(live_link.code)

    assert link_cache.is_link_entry(entry)
    assert redis_client.get(hot_redis.link_key(live_link.code)) == link_cache.CHANGED


# --- degraded mode, https ---------------------------------------------------------------------


@pytest.mark.django_db
def test_redirect_still_works_and_keeps_the_click_while_redis_is_down(client, live_link):
    with override_settings(REFERRAL_REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get(f"/r/{live_link.code}", {"utm_source": "x"}, HTTP_USER_AGENT=CHROME)

    assert response.status_code == 302
    click = Click.objects.get()
    assert (click.tenant_id, click.link_id, click.visitor_id) == (
        live_link.tenant_id,
        live_link.pk,
        response.cookies["rp_vid"].value,
    )
    assert click.utm == {"utm_source": "x"} and click.stream_id.startswith("pg-") and not click.is_bot


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True)
def test_plain_http_is_sent_to_https_first_when_ssl_redirect_is_on(client, live_link, stream):
    response = client.get(f"/r/{live_link.code}?utm_source=a")

    assert response.status_code == 301
    assert response["Location"] == f"https://testserver/r/{live_link.code}?utm_source=a"
    assert stream() == []
    secure = client.get(f"/r/{live_link.code}", secure=True)
    assert secure.status_code == 302


# --- tenancy ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tenant_a_code_never_lands_on_tenant_b_domains(client, world, stream):
    program_a = f.ProgramFactory(tenant=world.a, landing_url="https://tenant-a.example/ok")
    link_a = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program_a))
    # Tenant A's program pointed at tenant B's domain (past validation): B allows it, A does not.
    Program.objects.filter(pk=program_a.pk).update(landing_url="https://tenant-b.example/signup")

    response = client.get(f"/r/{link_a.code}")

    assert response.status_code == 404
    assert stream() == []


@pytest.mark.django_db
def test_each_tenant_code_lands_on_its_own_domain_and_records_its_own_ids(client, world, stream):
    link_a = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    link_b = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b)))

    to_a = client.get(f"/r/{link_a.code}")
    to_b = client.get(f"/r/{link_b.code}")

    assert urlsplit(to_a["Location"]).hostname == "tenant-a.example"
    assert urlsplit(to_b["Location"]).hostname == "tenant-b.example"
    assert [fields["c"].split(":", 1)[0] for _, fields in stream()] == [str(world.a.pk), str(world.b.pk)]


def test_referral_codes_are_unguessable_and_unique():
    codes = [new_referral_code() for _ in range(20_000)]

    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", code) and CODE_PATH.match(f"/r/{code}") for code in codes)
    # 72 random bits per code: every position takes many values (no counter, no timestamp).
    assert all(len({code[i] for code in codes}) > 50 for i in range(12))


@pytest.mark.django_db
def test_enrolled_participants_get_distinct_codes_across_tenants(world):
    from programs.services import participant_enroll
    from referral_platform.tenancy.actors import system_actor

    program_a = f.ProgramFactory(tenant=world.a)
    program_b = f.ProgramFactory(tenant=world.b)
    for index in range(10):
        participant_enroll(
            tenant=world.a,
            program=program_a,
            external_id=f"a{index}",
            name="A",
            email="a@x.example",
            actor=system_actor(world.a),
        )
        participant_enroll(
            tenant=world.b,
            program=program_b,
            external_id=f"b{index}",
            name="B",
            email="b@x.example",
            actor=system_actor(world.b),
        )

    codes = list(ReferralLink.objects.values_list("code", flat=True))
    assert len(codes) == len(set(codes)) >= 20


@pytest.mark.django_db
def test_redirect_reconnects_when_redis_dropped_its_connection(live_link, redis_client, stream):
    assert call_wsgi(f"/r/{live_link.code}")[0] == 302
    dedicated = hot_redis._connection()
    dedicated.send_command("CLIENT", "ID")
    redis_client.client_kill_filter(_id=dedicated.read_response())

    status, _headers, _body = call_wsgi(f"/r/{live_link.code}")

    assert status == 302
    assert len(stream()) == 2, "the click after the reconnect was not buffered"
    assert not Click.objects.exists()


@pytest.mark.django_db
def test_a_forked_worker_opens_its_own_redis_connection(live_link, stream):
    import os

    assert call_wsgi(f"/r/{live_link.code}")[0] == 302
    parent_connection = hot_redis._connection()

    pid = os.fork()
    if pid == 0:  # the child, like a gunicorn worker forked from a preloaded master
        ok = hot_redis._connection() is not parent_connection and call_wsgi(f"/r/{live_link.code}")[0] == 302
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert hot_redis._connection() is parent_connection
    assert call_wsgi(f"/r/{live_link.code}")[0] == 302
    assert len(stream()) == 3


@pytest.mark.django_db
def test_saves_that_change_nothing_the_entry_uses_keep_it_cached(
    client, live_link, redis_client, django_capture_on_commit_callbacks
):
    client.get(f"/r/{live_link.code}")
    key = hot_redis.link_key(live_link.code)
    participant, program = live_link.participant, live_link.program

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        participant.name = "Renamed"
        participant.save(update_fields=["name"])
        program.name = "Renamed program"
        program.save(update_fields=["name"])

    assert callbacks == []
    assert link_cache.is_link_entry(redis_client.get(key))

    with django_capture_on_commit_callbacks(execute=True):
        program.status = ProgramStatus.PAUSED
        program.save(update_fields=["status"])

    assert redis_client.get(key) == link_cache.CHANGED
    assert client.get(f"/r/{live_link.code}").status_code == 404
