"""PostgreSQL itself guards the ledger, so no code path (ORM, admin, raw SQL) can break it:

- ledger accounts, transactions and entries are append-only: UPDATE and DELETE raise;
- at commit (deferred constraint triggers) every transaction's entries sum to zero per currency, every
  transaction has entries, and an entry's account and transaction belong to the entry's tenant.

TRUNCATE is not guarded (test databases are flushed with it); see docs/ledger.md.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION rewards_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '23001';
END;
$$;

CREATE TRIGGER rewards_ledgeraccount_append_only BEFORE UPDATE OR DELETE ON rewards_ledgeraccount
    FOR EACH ROW EXECUTE FUNCTION rewards_ledger_append_only();
CREATE TRIGGER rewards_ledgertransaction_append_only BEFORE UPDATE OR DELETE ON rewards_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION rewards_ledger_append_only();
CREATE TRIGGER rewards_ledgerentry_append_only BEFORE UPDATE OR DELETE ON rewards_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION rewards_ledger_append_only();

CREATE FUNCTION rewards_ledger_entry_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    IF EXISTS (
        SELECT 1
        FROM rewards_ledgerentry e
        JOIN rewards_ledgeraccount a ON a.id = e.account_id
        JOIN rewards_ledgertransaction t ON t.id = e.transaction_id
        WHERE e.id = NEW.id AND (a.tenant_id <> e.tenant_id OR t.tenant_id <> e.tenant_id)
    ) THEN
        RAISE EXCEPTION 'ledger entry % mixes tenants', NEW.id USING ERRCODE = '23514';
    END IF;
    SELECT a.currency, SUM(e.amount_minor) AS total INTO unbalanced
    FROM rewards_ledgerentry e
    JOIN rewards_ledgeraccount a ON a.id = e.account_id
    WHERE e.transaction_id = NEW.transaction_id
    GROUP BY a.currency
    HAVING SUM(e.amount_minor) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance in %: entries sum to %',
            NEW.transaction_id, unbalanced.currency, unbalanced.total
            USING ERRCODE = '23514';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER rewards_ledgerentry_balanced AFTER INSERT ON rewards_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rewards_ledger_entry_check();

CREATE FUNCTION rewards_ledger_transaction_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rewards_ledgerentry WHERE transaction_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger transaction % has no entries', NEW.id USING ERRCODE = '23514';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER rewards_ledgertransaction_has_entries AFTER INSERT ON rewards_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rewards_ledger_transaction_check();
"""

REVERSE = r"""
DROP TRIGGER IF EXISTS rewards_ledgertransaction_has_entries ON rewards_ledgertransaction;
DROP FUNCTION IF EXISTS rewards_ledger_transaction_check();
DROP TRIGGER IF EXISTS rewards_ledgerentry_balanced ON rewards_ledgerentry;
DROP FUNCTION IF EXISTS rewards_ledger_entry_check();
DROP TRIGGER IF EXISTS rewards_ledgerentry_append_only ON rewards_ledgerentry;
DROP TRIGGER IF EXISTS rewards_ledgertransaction_append_only ON rewards_ledgertransaction;
DROP TRIGGER IF EXISTS rewards_ledgeraccount_append_only ON rewards_ledgeraccount;
DROP FUNCTION IF EXISTS rewards_ledger_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("rewards", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
