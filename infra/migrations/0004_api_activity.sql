-- Partner API activity log: one row per API call, written in batches off the request path and
-- kept for 7 days so an organization can diagnose its own integration. organization_id and
-- api_key_id are empty when the call failed authentication. No foreign keys: a row must be
-- storable for any call, and old rows are deleted by age alone.
CREATE TABLE api_activity (
    id               bigserial PRIMARY KEY,
    recorded_at      timestamptz NOT NULL,
    organization_id  bigint,
    api_key_id       bigint,
    method           text NOT NULL,
    path             text NOT NULL,
    status           smallint NOT NULL,
    duration_ms      double precision NOT NULL,
    request_id       text NOT NULL,
    remote           text
);
-- "Recent API activity" of one organization, newest first (optionally one key, since a time).
CREATE INDEX api_activity_by_organization ON api_activity (organization_id, recorded_at DESC);
-- The retention purge deletes by age across all organizations.
CREATE INDEX api_activity_by_age ON api_activity (recorded_at);
