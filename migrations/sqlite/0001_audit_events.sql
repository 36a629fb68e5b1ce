-- One row per request that reached the gateway. The SmartLead api_key is never
-- stored: `query` is redacted and the actor is the key's SHA-256 fingerprint.
CREATE TABLE audit_events (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    time              TEXT    NOT NULL,  -- RFC 3339, UTC, milliseconds
    request_id        TEXT    NOT NULL,
    method            TEXT    NOT NULL,
    path              TEXT    NOT NULL,  -- as sent, without the query
    query             TEXT,              -- secrets replaced by [REDACTED]
    actor_fingerprint TEXT,              -- first 16 hex of SHA-256(api_key)
    actor_label       TEXT,
    client_addr       TEXT,
    user_agent        TEXT,
    operation         TEXT    NOT NULL,  -- passthrough, delete_campaign, ...
    campaign_id       INTEGER,
    action            TEXT,
    would_action      TEXT,
    rule              TEXT,
    policy_revision   TEXT,
    snapshot_id       INTEGER,
    upstream_status   INTEGER,
    status            INTEGER NOT NULL,
    bytes_in          INTEGER NOT NULL,
    bytes_out         INTEGER NOT NULL,
    duration_ms       REAL    NOT NULL,
    error_kind        TEXT
);

CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_campaign ON audit_events (campaign_id, id);
