-- The two database roles of the referral platform (README "Database roles"), on an existing server.
-- Run once, as a superuser, connected to the application's database; safe to run again:
--
--   psql "postgres://postgres@HOST:5432/referral" -v owner=referral_owner -v app=referral_app \
--        -v owner_password=CHANGE-ME -v app_password=CHANGE-ME -f scripts/db_roles.sql
--
-- owner: owns the database, its schema and every table; `manage.py migrate` runs as it.
-- app:   what web, Celery worker and beat log in as. No superuser, owns nothing, cannot disable triggers
--        or set session_replication_role; row access only, granted by every migrate
--        (referral_platform/db_roles.py; set DATABASE_APP_ROLE=<app> for the migrate process): the ledger
--        INSERT + SELECT only.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'app')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app') \gexec
-- Re-running never widens the app role.
SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'app') \gexec

\if :{?owner_password}
SELECT format('ALTER ROLE %I PASSWORD %L', :'owner', :'owner_password') \gexec
\endif
\if :{?app_password}
SELECT format('ALTER ROLE %I PASSWORD %L', :'app', :'app_password') \gexec
\endif

-- The owner may act as the app role (the test suite switches to it after migrating).
SELECT format('GRANT %I TO %I', :'app', :'owner') \gexec

SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'owner') \gexec
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'app') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'app') \gexec

-- A database migrated by another role before: hand its tables (with their sequences) and functions over.
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'owner')
FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'owner' \gexec
SELECT format('ALTER VIEW public.%I OWNER TO %I', viewname, :'owner')
FROM pg_views WHERE schemaname = 'public' AND viewowner <> :'owner' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'owner')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \gexec
-- The app role owns nothing.
SELECT format('REASSIGN OWNED BY %I TO %I', :'app', :'owner') \gexec
