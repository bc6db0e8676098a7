"""The cache entry behind ``/r/<code>``: everything the redirect needs, so a warm hit runs no SQL.

An entry is one Redis string under ``<prefix>:{rp-hot}:rl:<code>`` (hash tag: hot_redis)::

    b"<tenant>:<link>:<program>:<participant>:<channel>\n" + JSON {"u": target prefix,
                                                                   "f": fragment suffix,
                                                                   "d": allowed landing domains}

The first line is copied verbatim into each buffered click by the Lua script of
``referrals.click_buffer`` (so the hot path never parses it); the JSON holds the landing URL
already split around the visitor id, so the redirect only concatenates strings. Besides a
positive entry a key may hold ``MISSING`` (unknown code, inactive link, participant or program,
or a landing URL outside the allowed domains; cached briefly) or ``CHANGED`` (just invalidated).

Entries live ``REFERRAL_LINK_CACHE_SECONDS`` and are dropped when a link, its participant, its
program or the tenant changes (signal receivers below, run after commit). The receivers cover
every ``save()``/``delete()`` path (admin, services, shell); writes through ``QuerySet.update()``
must call one of the ``link_cache_forget_*`` functions, or wait for the TTL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.encoding import iri_to_uri

from programs.models import Participant, ParticipantStatus, Program, ProgramStatus
from programs.services import host_is_allowed
from referral_platform.tenancy import rls
from referral_platform.tenancy.models import Tenant

from . import click_spool, hot_redis
from .models import ReferralLink

MISSING = b"-"
CHANGED = b"?"
# How long an invalidated key refuses to be refilled, so a reader that loaded the row before
# the change committed cannot put the stale version back.
CHANGED_SECONDS = 5

# Printable ASCII without space, quotes, angle brackets, backslash, braces, pipe, caret, backtick:
# what a URL may contain after iri_to_uri(). Anything else (CR/LF, "\\") is refused outright.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+\Z")

# Set the key unless it was invalidated a moment ago (CHANGED): reading the row and writing the
# cache are not atomic, and a change that commits in between must win.
_FILL_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class _AllowedDomains:
    """What host_is_allowed() reads from a tenant, rebuilt from a cache entry."""

    __slots__ = ("allowed_landing_domains",)

    def __init__(self, domains: list[str]) -> None:
        self.allowed_landing_domains = domains


def split_landing_url(landing_url: str, *, code: str) -> tuple[str, str] | None:
    """The landing URL as (prefix, suffix) so that ``prefix + visitor_id + suffix`` is the target.

    The landing URL's own query is kept byte for byte, minus any parameter named like ours; the
    referral code and the visitor id are appended. None when the URL is not a plain http(s) URL.
    """
    url = iri_to_uri(landing_url.strip())
    if not _URL_CHARS.match(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    ours = {settings.REFERRAL_CODE_PARAM, settings.REFERRAL_VISITOR_PARAM}
    kept = [pair for pair in parts.query.split("&") if pair and pair.split("=", 1)[0] not in ours]
    kept.append(f"{settings.REFERRAL_CODE_PARAM}={quote(code, safe='')}")
    kept.append(f"{settings.REFERRAL_VISITOR_PARAM}=")
    prefix = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "&".join(kept), ""))
    return prefix, (f"#{parts.fragment}" if parts.fragment else "")


def target_is_allowed(url: str, domains: list[str]) -> bool:
    return bool(_URL_CHARS.match(url)) and host_is_allowed(tenant=_AllowedDomains(domains), url=url)


def entry_for_link(link: ReferralLink | None) -> bytes:
    """The cache entry for a link row (with program, participant and tenant loaded)."""
    if link is None or not link.is_active:
        return MISSING
    program, participant, tenant = link.program, link.participant, link.tenant
    if (
        program.status != ProgramStatus.ACTIVE
        or participant.status != ParticipantStatus.ACTIVE
        or participant.program_id != program.pk
        or not (program.tenant_id == participant.tenant_id == link.tenant_id == tenant.pk)
    ):
        return MISSING
    split = split_landing_url(program.landing_url, code=link.code)
    domains = list(tenant.allowed_landing_domains)
    if split is None or not target_is_allowed(f"{split[0]}0{split[1]}", domains):
        return MISSING
    ids = f"{tenant.pk}:{link.pk}:{program.pk}:{participant.pk}:{link.channel}"
    target = json.dumps({"u": split[0], "f": split[1], "d": domains}, separators=(",", ":"))
    return f"{ids}\n{target}".encode()


def is_link_entry(entry: bytes) -> bool:
    return entry[:1].isdigit()


def redirect_target(entry: bytes, visitor_id: str) -> str | None:
    """Where a positive entry sends ``visitor_id``; re-checked against the cached allowed domains.

    The check is a pure function of the entry's bytes, so its outcome is remembered per distinct
    entry (a changed entry is different bytes and is checked afresh).
    """
    checked = _checked_targets.get(entry)
    if checked is None:
        checked = _check_target(entry)
        if len(_checked_targets) >= _CHECKED_TARGETS_MAX:
            _checked_targets.clear()
        _checked_targets[entry] = checked
    if checked is False:
        return None
    return f"{checked[0]}{visitor_id}{checked[1]}"


_CHECKED_TARGETS_MAX = 20_000
_checked_targets: dict[bytes, tuple[str, str] | bool] = {}


def _check_target(entry: bytes) -> tuple[str, str] | bool:
    target = json.loads(entry[entry.index(b"\n") + 1 :])
    # Any visitor id is URL-safe base64, so checking with a stand-in covers every one.
    if not target_is_allowed(f"{target['u']}0{target['f']}", target["d"]):
        return False
    return target["u"], target["f"]


def entry_ids(entry: bytes) -> bytes:
    return entry[: entry.index(b"\n")]


def load_entry(code: str) -> bytes:
    """Read the link from Postgres, cache its entry (unless it was just invalidated), return it."""
    with rls.resolve("link by code"):
        link = ReferralLink.objects.select_related("program", "participant", "tenant").filter(code=code).first()
        entry = entry_for_link(link)
    ttl = settings.REFERRAL_LINK_CACHE_SECONDS if is_link_entry(entry) else settings.REFERRAL_LINK_MISS_CACHE_SECONDS
    _fill_script()(keys=[hot_redis.link_key(code)], args=[entry, ttl, CHANGED])
    return entry


_fill = None


def _fill_script():
    global _fill
    if _fill is None:
        _fill = hot_redis.client().register_script(_FILL_SCRIPT)
    return _fill


def link_cache_warm(codes: Iterable[str]) -> int:
    """Load the entries of ``codes`` into the cache in one query and one round trip per 1,000."""
    codes = list(codes)
    client = hot_redis.client()
    warmed = 0
    for start in range(0, len(codes), 1000):
        chunk = codes[start : start + 1000]
        links = {
            link.code: link
            for link in ReferralLink.objects.select_related("program", "participant", "tenant").filter(code__in=chunk)
        }
        with client.pipeline(transaction=False) as pipe:
            for code in chunk:
                entry = entry_for_link(links.get(code))
                positive = is_link_entry(entry)
                ttl = settings.REFERRAL_LINK_CACHE_SECONDS if positive else settings.REFERRAL_LINK_MISS_CACHE_SECONDS
                pipe.set(hot_redis.link_key(code), entry, ex=ttl)
                warmed += positive
            pipe.execute()
    return warmed


# --- invalidation ----------------------------------------------------------------------------


def link_cache_forget_codes(codes: Iterable[str]) -> None:
    """Drop the entries of ``codes``; the next hit reloads them from Postgres."""
    client = hot_redis.client()
    batch: list[str] = []
    for code in codes:
        batch.append(code)
        if len(batch) == 1000:
            _mark_changed(client, batch)
            batch = []
    if batch:
        _mark_changed(client, batch)


def _mark_changed(client, codes: list[str]) -> None:
    click_spool.forget_local(codes)  # this process at once; the others within REFERRAL_LINK_LOCAL_SECONDS
    with client.pipeline(transaction=False) as pipe:
        for code in codes:
            pipe.set(hot_redis.link_key(code), CHANGED, ex=CHANGED_SECONDS)
        pipe.execute()
    # Again: a request of this process may have read (and remembered) the old entry before CHANGED was set.
    click_spool.forget_local(codes)


def link_cache_forget_program(program_id: int) -> None:
    link_cache_forget_codes(
        ReferralLink.objects.filter(program_id=program_id).values_list("code", flat=True).iterator()
    )


def link_cache_forget_participant(participant_id: int) -> None:
    link_cache_forget_codes(
        ReferralLink.objects.filter(participant_id=participant_id).values_list("code", flat=True).iterator()
    )


def link_cache_forget_tenant(tenant_id: int) -> None:
    link_cache_forget_codes(ReferralLink.objects.filter(tenant_id=tenant_id).values_list("code", flat=True).iterator())


def _after_commit(function, *args) -> None:
    # After commit: forgetting before the change is visible would let a reader cache the old row.
    transaction.on_commit(lambda: function(*args))


# The fields a cache entry is built from; a save that names others in update_fields changes nothing.
_LINK_FIELDS = {"code", "is_active", "channel", "program", "participant", "tenant"}
_PARTICIPANT_FIELDS = {"status", "program", "tenant"}
_PROGRAM_FIELDS = {"status", "landing_url", "tenant"}
_TENANT_FIELDS = {"allowed_landing_domains"}


def _matters(created: bool, update_fields, relevant: set[str]) -> bool:
    # A new row has no entry yet (a new link's code is fresh randomness: at most a 30 s negative
    # entry could exist if someone had typed it just before).
    if created:
        return False
    return update_fields is None or not relevant.isdisjoint(update_fields)


def _link_saved(sender, instance: ReferralLink, created: bool = False, update_fields=None, **kwargs) -> None:
    if _matters(created, update_fields, _LINK_FIELDS):
        _after_commit(link_cache_forget_codes, [instance.code])


def _link_deleted(sender, instance: ReferralLink, **kwargs) -> None:
    _after_commit(link_cache_forget_codes, [instance.code])


def _participant_saved(sender, instance: Participant, created: bool = False, update_fields=None, **kwargs) -> None:
    if _matters(created, update_fields, _PARTICIPANT_FIELDS):
        _after_commit(link_cache_forget_participant, instance.pk)


def _program_saved(sender, instance: Program, created: bool = False, update_fields=None, **kwargs) -> None:
    if _matters(created, update_fields, _PROGRAM_FIELDS):
        _after_commit(link_cache_forget_program, instance.pk)


def _tenant_saved(sender, instance: Tenant, created: bool = False, update_fields=None, **kwargs) -> None:
    if _matters(created, update_fields, _TENANT_FIELDS):
        _after_commit(link_cache_forget_tenant, instance.pk)


def connect_invalidation() -> None:
    """Keep cached links coherent with every save/delete of the rows they are built from.

    Receivers rather than calls in each service: a stale entry can send visitors to a domain the
    tenant has just removed, so coherence must not depend on every writer (admin, services of
    other apps, shell) remembering to invalidate.
    """
    post_save.connect(_link_saved, sender=ReferralLink, dispatch_uid="link_cache_link_saved")
    post_delete.connect(_link_deleted, sender=ReferralLink, dispatch_uid="link_cache_link_deleted")
    post_save.connect(_participant_saved, sender=Participant, dispatch_uid="link_cache_participant_saved")
    post_save.connect(_program_saved, sender=Program, dispatch_uid="link_cache_program_saved")
    post_save.connect(_tenant_saved, sender=Tenant, dispatch_uid="link_cache_tenant_saved")
