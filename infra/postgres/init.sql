-- Two databases on one PostgreSQL server: Airflow's metadata DB and the lifelong label store.
--
-- The postgres image runs this once, as POSTGRES_USER, when its data directory is empty
-- (mounted at /docker-entrypoint-initdb.d/). It is also safe to run again by hand:
--   psql -v ON_ERROR_STOP=1 -U postgres -f infra/postgres/init.sql
-- Passwords come from the container environment through psql's \getenv (psql 15+), never from this
-- file. Role and database names default to the ones the compose file's URLs use; the
-- *_DB_USER / *_DB_NAME variables exist so a test can run this against a shared server without clashes.
--
-- Each role owns its database and nobody else may connect to it: the Airflow role cannot read labels,
-- and the label-store role cannot touch Airflow's tables. Alembic (run by the label store on first
-- open) creates the label-store tables as their owner.

\set ON_ERROR_STOP on

\getenv airflow_db_password AIRFLOW_DB_PASSWORD
\getenv labels_db_password LABELS_DB_PASSWORD
\getenv airflow_db_user AIRFLOW_DB_USER
\getenv airflow_db_name AIRFLOW_DB_NAME
\getenv labels_db_user LABELS_DB_USER
\getenv labels_db_name LABELS_DB_NAME

\if :{?airflow_db_user}
\else
  \set airflow_db_user airflow
\endif
\if :{?airflow_db_name}
\else
  \set airflow_db_name airflow
\endif
\if :{?labels_db_user}
\else
  \set labels_db_user lifelong
\endif
\if :{?labels_db_name}
\else
  \set labels_db_name lifelong_labels
\endif

-- Fail loudly (exit status 3 under ON_ERROR_STOP) rather than create roles nobody can log in as.
\if :{?airflow_db_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'AIRFLOW_DB_PASSWORD is not set in the postgres container environment'; END $$;
\endif
\if :{?labels_db_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'LABELS_DB_PASSWORD is not set in the postgres container environment'; END $$;
\endif

-- Roles: create when missing, then (re)set the password so a re-run picks up a rotated one.
SELECT format('CREATE ROLE %I LOGIN', :'airflow_db_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'airflow_db_user') \gexec
ALTER ROLE :"airflow_db_user" WITH LOGIN PASSWORD :'airflow_db_password';

SELECT format('CREATE ROLE %I LOGIN', :'labels_db_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'labels_db_user') \gexec
ALTER ROLE :"labels_db_user" WITH LOGIN PASSWORD :'labels_db_password';

-- Databases: CREATE DATABASE cannot run in a transaction block or a DO body, hence \gexec.
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'airflow_db_name', :'airflow_db_user', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'airflow_db_name') \gexec

SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'labels_db_name', :'labels_db_user', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'labels_db_name') \gexec

-- Only the owner (and superusers) may connect: PUBLIC gets CONNECT on new databases by default.
REVOKE ALL ON DATABASE :"airflow_db_name" FROM PUBLIC;
REVOKE ALL ON DATABASE :"labels_db_name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"airflow_db_name" TO :"airflow_db_user";
GRANT CONNECT, TEMPORARY ON DATABASE :"labels_db_name" TO :"labels_db_user";
