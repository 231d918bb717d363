/* store.c — the migrations of user-svc's schema. */
#include "store.h"

const struct pg_migration store_migrations[] = {
    { 1, "users",
      "CREATE EXTENSION IF NOT EXISTS pgcrypto;\n" /* gen_random_uuid before PostgreSQL 13 */
      "CREATE TABLE users (\n"
      "  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),\n"
      "  email text NOT NULL UNIQUE CHECK (email = lower(btrim(email)) AND length(email) BETWEEN 3 AND 254),\n"
      "  name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),\n"
      "  password_hash text,\n"
      "  roles text[] NOT NULL DEFAULT '{user}',\n"
      "  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),\n"
      "  order_count int NOT NULL DEFAULT 0 CHECK (order_count >= 0),\n"
      "  last_order_at timestamptz,\n"
      "  created_at timestamptz NOT NULL DEFAULT now(),\n"
      "  updated_at timestamptz NOT NULL DEFAULT now()\n"
      ");\n"
      "CREATE INDEX users_created_id ON users (created_at, id);\n" },
    { 2, "processed_events",
      "CREATE TABLE processed_events (\n"
      "  event_id text PRIMARY KEY,\n"
      "  processed_at timestamptz NOT NULL DEFAULT now()\n"
      ");\n" },
};

const size_t store_nmigrations = sizeof store_migrations / sizeof store_migrations[0];
