-- The application schema: customers and their orders, owned by app_owner, read/write for
-- app_rw. Objects are created by the migrating user (a superuser, or a member of app_owner)
-- and handed to app_owner, so the migration does not depend on SET ROLE.

CREATE SCHEMA app AUTHORIZATION app_owner;
REVOKE ALL ON SCHEMA app FROM PUBLIC;

CREATE TABLE app.customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text        NOT NULL UNIQUE CHECK (position('@' IN email) > 1),
    full_name   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.orders (
    id           bigserial   PRIMARY KEY,
    customer_id  bigint      NOT NULL REFERENCES app.customers (id) ON DELETE CASCADE,
    status       text        NOT NULL DEFAULT 'new'
                             CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total_cents  bigint      NOT NULL CHECK (total_cents >= 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_customer_id_idx ON app.orders (customer_id);

-- Ownership (owned sequences, identity and bigserial, follow their tables).
ALTER TABLE app.customers OWNER TO app_owner;
ALTER TABLE app.orders OWNER TO app_owner;

-- What app_rw may do now...
GRANT USAGE ON SCHEMA app TO app_rw;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO app_rw;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO app_rw;

-- ...and on whatever app_owner creates in the schema later.
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_rw;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app
    GRANT USAGE ON SEQUENCES TO app_rw;
