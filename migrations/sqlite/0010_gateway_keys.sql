-- Gateway keys: people and tools hold keys of the gateway's own, and the
-- gateway holds the SmartLead keys. Only a key's SHA-256 is stored. A name
-- has at most one current key; a rotated key keeps working until its
-- `expires_at` (the grace period), a revoked one stops at once.
CREATE TABLE gateway_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    key_sha256   TEXT    NOT NULL UNIQUE,  -- hex SHA-256 of the whole key
    account      TEXT    NOT NULL,         -- the [smartlead] account it sends for
    rate_limit   TEXT,                     -- "30/min"; null: the configured default
    created_at   TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,         -- OS user or "admin token"
    expires_at   TEXT,
    replaced_at  TEXT,                     -- rotated: when a newer key took over
    revoked_at   TEXT,
    revoked_by   TEXT,
    last_used_at TEXT
);
CREATE UNIQUE INDEX gateway_keys_current ON gateway_keys (name)
    WHERE replaced_at IS NULL AND revoked_at IS NULL;

-- Which SmartLead account a request was sent for; hashed in the chain only
-- when present (the optional tail), so older records still verify.
ALTER TABLE audit_events ADD COLUMN account TEXT;
CREATE INDEX audit_events_actor ON audit_events (actor_label, id);

-- The bypass watch: the campaigns each account had at its last listing.
CREATE TABLE bypass_accounts (
    account   TEXT PRIMARY KEY,
    listed_at TEXT NOT NULL
);
CREATE TABLE bypass_campaigns (
    account     TEXT    NOT NULL,
    campaign_id INTEGER NOT NULL,
    name        TEXT,
    status      TEXT,
    seen_at     TEXT    NOT NULL,
    PRIMARY KEY (account, campaign_id)
);
