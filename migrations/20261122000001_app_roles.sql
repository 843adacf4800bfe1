-- Cluster-wide roles of the application schema.
--
--   app_owner  NOLOGIN  owns schema app and everything in it
--   app_rw     NOLOGIN  read/write access to the application's data; login users get it
--                       with GRANT app_rw TO <user>
--
-- Roles belong to the whole cluster while each test migrates its own fresh database, often
-- several at the same time: create each role only if it is missing, and tolerate a
-- concurrent creation. A concurrent CREATE ROLE of the same name fails with duplicate_object
-- (42710) when the other transaction committed before ours looked, or unique_violation
-- (23505, on pg_authid's name index) when ours waited on the other's uncommitted row.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'app_owner') THEN
        BEGIN
            CREATE ROLE app_owner NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            RAISE NOTICE 'role app_owner already exists (created concurrently)';
        END;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'app_rw') THEN
        BEGIN
            CREATE ROLE app_rw NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            RAISE NOTICE 'role app_rw already exists (created concurrently)';
        END;
    END IF;
END
$$;
