"""The Celery app. Tasks are autodiscovered from each app's tasks.py."""

from __future__ import annotations

import contextlib
import contextvars
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.dev")

app = Celery("referral_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def money_task(*args, **kwargs):
    """Decorator for tasks that move money: acknowledged only after they finish, so a crash
    redelivers them (their services are idempotent), and never retried past the visibility timeout."""
    kwargs.setdefault("acks_late", True)
    kwargs.setdefault("reject_on_worker_lost", True)
    kwargs.setdefault("max_retries", 5)
    return app.task(*args, **kwargs)


def enqueue_on_commit(
    task, *args, countdown: int | None = None, once: bool = False, merge: tuple[str, ...] = (), **kwargs
) -> None:
    """Queue ``task`` once the current transaction commits (immediately outside a transaction).

    A task queued inside a transaction that then rolls back would act on rows that never existed.
    With ``once``, a second request for the same task and arguments in the same transaction is dropped
    (e.g. one settlement of a referral however many of its rows the transaction changed); the task reads
    the committed state, so one run covers them all.
    """
    from django.conf import settings
    from django.db import transaction

    if countdown is not None and countdown > settings.CELERY_MAX_COUNTDOWN_SECONDS:
        raise ValueError(
            f"countdown {countdown}s exceeds CELERY_MAX_COUNTDOWN_SECONDS ({settings.CELERY_MAX_COUNTDOWN_SECONDS}s)"
        )
    options = {"countdown": countdown} if countdown is not None else {}

    def send():
        send.sent = True
        final = request_kwargs(send)
        collector = _collector.get()
        if collector is not None and task.name in collector.names and not options:
            collector.calls.append((task, args, final))
            return
        task.apply_async(args=args, kwargs=final, **options)

    send.sent = False
    send.kwargs = kwargs
    if merge:
        # One task per transaction for the same task and arguments: the id lists named in ``merge`` are
        # joined into the pending one. No id is lost to the merging: a pending request is dropped only by the
        # rollback of a savepoint it was registered in that is still open (Django drops the callbacks of a
        # rolled-back savepoint; a released one can no longer be rolled back), and every savepoint still open is
        # one this request is registered in too — so a rollback that drops the pending one drops this one. (Until
        # issue 15's nineteenth session only a request of this savepoint level or an enclosing one was joined:
        # each event of a drain's chunk, in a savepoint of its own, then left one more pending request, and each
        # new one was compared with all of them.)
        send.merge_key = (
            task.name,
            args,
            tuple(sorted((k, v) for k, v in kwargs.items() if k not in merge)),
            countdown,
        )
        # The merged ids are kept as sets while the request is pending and sorted once, when it is sent: a drain's
        # chunk merges thousands of requests into one (re-sorting the whole list at each was quadratic, issue 15).
        send.merged = {name: set(kwargs.get(name) or ()) for name in merge}
        connection = transaction.get_connection()
        if connection.in_atomic_block:
            for _sids, func in _pending(connection).find("merge_key", send.merge_key):
                if not func.sent:
                    for name in merge:
                        func.merged[name].update(kwargs.get(name) or ())
                    return
    if once:
        send.dedupe_key = (task.name, args, tuple(sorted(kwargs.items())), countdown)
        connection = transaction.get_connection()
        # Django drops the callbacks of rolled-back savepoints from this list, so what is here will run
        # (unless it already ran: tests execute captured callbacks without committing).
        if connection.in_atomic_block and any(
            not func.sent for _sids, func in _pending(connection).find("dedupe_key", send.dedupe_key)
        ):
            return
    transaction.on_commit(send)


def request_kwargs(send) -> dict:
    """The keyword arguments a pending ``enqueue_on_commit`` request (its callback) is sent with: its own, and
    the ids merged into it (``merge``) as sorted lists."""
    merged = getattr(send, "merged", None)
    if not merged:
        return send.kwargs
    return {**send.kwargs, **{name: sorted(ids) for name, ids in merged.items()}}


class _Pending:
    """The connection's pending ``enqueue_on_commit`` callbacks by their ``dedupe_key`` / ``merge_key``, in the
    order they were registered: a transaction that queues thousands of follow-ups (a drain's chunk, issue 15)
    finds a pending one by its key instead of scanning every callback for each new one. Django appends to
    ``run_on_commit`` and replaces the list when it drops callbacks (a savepoint rolled back) or runs them (the
    commit): the index covers the list it was built from, extended by what was appended since. A key that cannot
    be hashed (arguments holding a list) is looked up, and makes every later lookup of this list, as before: by
    scanning every callback."""

    __slots__ = ("by_key", "callbacks", "hashable", "indexed")

    def __init__(self, callbacks: list) -> None:
        self.callbacks = callbacks  # (held: the ``is`` check below never meets a recycled list)
        self.indexed = 0
        self.by_key: dict = {"dedupe_key": {}, "merge_key": {}}
        self.hashable = True

    def find(self, attribute: str, key) -> list:
        """The pending (savepoint ids, callback) pairs whose ``attribute`` equals ``key``, oldest first."""
        if self.hashable:
            try:
                return self.by_key[attribute].get(key, [])
            except TypeError:
                pass
        return [(sids, func) for sids, func, _robust in self.callbacks if getattr(func, attribute, None) == key]


def _pending(connection) -> _Pending:
    index = getattr(connection, "_enqueue_pending", None)
    callbacks = connection.run_on_commit
    if index is None or index.callbacks is not callbacks or index.indexed > len(callbacks):
        index = connection._enqueue_pending = _Pending(callbacks)
    for sids, func, _robust in callbacks[index.indexed :]:
        for attribute, table in index.by_key.items():
            key = getattr(func, attribute, None)
            if key is not None:
                try:
                    table.setdefault(key, []).append((sids, func))
                except TypeError:
                    index.hashable = False
    index.indexed = len(callbacks)
    return index


class TaskCollector:
    """The follow-up tasks (by name) that ``enqueue_on_commit`` handed over instead of publishing them,
    in the order their transactions committed: ``(task, args, kwargs)``."""

    def __init__(self, names):
        self.names = frozenset(names)
        self.calls: list = []

    def take(self) -> list:
        calls, self.calls = self.calls, []
        return calls

    def publish_all(self) -> None:
        """Publish what is still held, as ``enqueue_on_commit`` would have (nothing is dropped)."""
        for task, args, kwargs in self.take():
            task.apply_async(args=args, kwargs=kwargs)


_collector: contextvars.ContextVar[TaskCollector | None] = contextvars.ContextVar("task_collector", default=None)


@contextlib.contextmanager
def collect_tasks(*names: str):
    """Within the block, tasks named ``names`` queued by ``enqueue_on_commit`` are collected (still only
    after their transaction commits, never for a rolled-back one) instead of published, so a batch task
    can run them itself in batches (rewards.pipeline). Whatever is still collected when the block ends —
    an exception included — is published, so a follow-up is never lost to the batching."""
    collector = TaskCollector(names)
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)
        collector.publish_all()


def check_visibility_timeout(conf) -> None:
    from django.conf import settings

    timeout = conf.broker_transport_options.get("visibility_timeout", 3600)
    if timeout <= settings.CELERY_MAX_COUNTDOWN_SECONDS:
        raise RuntimeError(
            f"Redis visibility_timeout ({timeout}s) must exceed CELERY_MAX_COUNTDOWN_SECONDS "
            f"({settings.CELERY_MAX_COUNTDOWN_SECONDS}s), or late-acked tasks run twice."
        )


@signals.worker_init.connect
def _check_at_worker_start(sender=None, **kwargs):
    check_visibility_timeout(app.conf)


@signals.beat_init.connect
def _check_at_beat_start(sender=None, **kwargs):
    check_visibility_timeout(app.conf)


@signals.worker_process_init.connect
def _tune_gc(**kwargs):
    """Each pool process: its start-up objects frozen, the collector's thresholds raised (gc_tuning.py)."""
    from django.conf import settings

    from .gc_tuning import worker_gc_tune

    worker_gc_tune(settings.WORKER_GC_THRESHOLDS)


@app.task(name="referral_platform.ping")
def ping() -> str:
    return "pong"


@app.task(name="referral_platform.reconcile", ignore_result=True)
def reconcile_task() -> dict:
    """Beat: re-queue work a dead worker left in a non-final state (referral_platform/reconcile.py)."""
    from .reconcile import reconcile

    return reconcile()


# --- row-level security (issue 14) ---------------------------------------------------------------------
# A task queued while its sender was bound to a tenant carries that tenant in a message header and runs
# bound to it, under the tenant's policy. Other tasks (scheduled sweeps, work queued from the cross-tenant
# path) start resolving: they may look up their subject, and the services bind its tenant or take the
# audited bypass. An eager task (tests) keeps its caller's state. Each task's state is undone after it.
RLS_TENANT_HEADER = "rp_tenant"
# The truly cross-tenant jobs: they run on the audited bypass (logged with this reason), whoever queued them.
CROSS_TENANT_TASKS = {
    "referrals.flush_clicks": "click flush",
    "referral_platform.reconcile": "reconciler",
    "rewards.payouts_run": "payouts run",
    "rewards.release_holds": "sweep: reward holds ending",
    "partners.deals_expire": "sweep: deal registrations expiring",
    "partners.deals_warn_expiring": "sweep: deal expiry warnings",
    "partners.tiers_recompute": "sweep: partner tiers",
    "engagement.asks_send_due": "sweep: asks due",
    "engagement.webhooks_retry_due": "sweep: webhook retries due",
    "analytics.refresh_recent": "sweep: nightly rollup refresh",
    "analytics.refresh_clicks": "rollups of flushed clicks (every tenant's)",
}


@signals.before_task_publish.connect
def _rls_tenant_header(sender=None, headers=None, **kwargs):
    from referral_platform.tenancy import rls

    tenant_id = rls.current_tenant_id()
    if headers is not None and tenant_id is not None:
        headers[RLS_TENANT_HEADER] = tenant_id


@signals.task_prerun.connect
def _rls_task_start(sender=None, task=None, **kwargs):
    from referral_platform.tenancy import rls

    if task is None or getattr(task.request, "is_eager", False):
        return
    tenant_id = getattr(task.request, RLS_TENANT_HEADER, None)
    task.request.rls_token = rls.enter_task(tenant_id, task.name, cross_tenant=CROSS_TENANT_TASKS.get(task.name))


@signals.task_prerun.connect
def _young_tables(sender=None, task=None, **kwargs):
    """Statistics for tables never analysed or grown since, before a worker's task (db/young_tables.py)."""
    if task is None or getattr(task.request, "is_eager", False):
        return
    from referral_platform.db.young_tables import young_tables_check

    young_tables_check()


@signals.task_postrun.connect
def _rls_task_end(sender=None, task=None, **kwargs):
    from referral_platform.tenancy import rls

    token = getattr(task.request, "rls_token", None) if task is not None else None
    if token is not None:
        rls.leave_task(token)
