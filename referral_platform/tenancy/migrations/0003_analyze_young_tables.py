"""``referral_analyze_young(min_pages)``: statistics for the tables PostgreSQL has never analysed, or that have
doubled since it last did (issue 15; referral_platform/db/young_tables.py). Owned by the role that migrates (the tables' owner: only it may ANALYZE
them) and run with its rights (SECURITY DEFINER), so the application's restricted role can ask for it."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION referral_analyze_young(min_pages integer) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    analysed text[] := '{}';
    young record;
BEGIN
    -- One caller at a time; the others go on without waiting (the first one gathers for everybody).
    IF NOT pg_try_advisory_xact_lock(hashtext('referral_analyze_young')) THEN
        RETURN analysed;
    END IF;
    FOR young IN
        SELECT n.nspname, c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r'
           AND c.relowner = current_user::regrole  -- the migrating role's tables (the definer's)
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
           -- min_pages at least, and twice the pages it had when last analysed or vacuumed (relpages: 0 if never)
           AND pg_relation_size(c.oid)
               >= greatest(min_pages::bigint, 2 * c.relpages::bigint) * current_setting('block_size')::bigint
         ORDER BY c.relname
    LOOP
        EXECUTE format('ANALYZE %I.%I', young.nspname, young.relname);
        analysed := analysed || young.relname::text;
    END LOOP;
    RETURN analysed;
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0002_apikey_revoked_reason_apikey_scope_idempotencykey"),
    ]

    operations = [
        migrations.RunSQL(CREATE, reverse_sql="DROP FUNCTION IF EXISTS referral_analyze_young(integer);"),
    ]
