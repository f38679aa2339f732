-- Partner API keys: only a SHA-256 of the token is kept. The gateway reads this table on every
-- request, so a revocation takes effect everywhere at once.
CREATE TABLE api_keys (
    id                     bigint PRIMARY KEY,
    organization_id        bigint NOT NULL,
    name                   text NOT NULL,
    token_hash             bytea NOT NULL UNIQUE,
    token_prefix           text NOT NULL,
    allowed_origins        text[] NOT NULL DEFAULT '{}',
    rate_limit_per_minute  integer NOT NULL DEFAULT 120 CHECK (rate_limit_per_minute > 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    revoked_at             timestamptz
);
CREATE SEQUENCE api_key_ids;
CREATE INDEX api_keys_by_organization ON api_keys (organization_id);
