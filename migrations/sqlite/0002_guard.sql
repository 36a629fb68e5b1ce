-- The deletion guard: one row per guarded request (a durable intent written
-- before anything destructive leaves the gateway), and the snapshots taken
-- for them, stored as zstd-compressed chunks with a SHA-256 per part.

CREATE TABLE operations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL,  -- delete_campaign
    campaign_id       INTEGER NOT NULL,
    -- received -> deciding -> snapshotting -> acting -> done | denied |
    -- not_found | snapshot_failed | upstream_failed | interrupted
    state             TEXT    NOT NULL,
    request_id        TEXT    NOT NULL,
    actor_fingerprint TEXT,
    actor_label       TEXT,
    action            TEXT,              -- allow, archive, deny (the decision)
    would_action      TEXT,              -- shadow rules: "rule=action, ..."
    rule              TEXT,
    policy_revision   TEXT,
    snapshot_id       INTEGER,
    upstream_status   INTEGER,           -- of the destructive call, if one was made
    error             TEXT,              -- why it failed, for people (never a secret)
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL
);

-- Single flight: at most one unfinished operation per campaign and kind,
-- across threads and processes.
CREATE UNIQUE INDEX operations_active_campaign
    ON operations (kind, campaign_id)
    WHERE state IN ('received', 'deciding', 'snapshotting', 'acting');
CREATE INDEX operations_campaign ON operations (campaign_id, id);

CREATE TABLE snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id  INTEGER REFERENCES operations (id),
    campaign_id   INTEGER NOT NULL,
    state         TEXT    NOT NULL,  -- in_progress, complete, failed, incomplete
    created_at    TEXT    NOT NULL,
    completed_at  TEXT,
    error         TEXT
);
CREATE INDEX snapshots_campaign ON snapshots (campaign_id, id);

CREATE TABLE snapshot_parts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    snapshot_id      INTEGER NOT NULL REFERENCES snapshots (id),
    kind             TEXT    NOT NULL,  -- campaign, leads_csv, sequences, email_accounts, webhooks, analytics
    content_type     TEXT,
    upstream_status  INTEGER,
    state            TEXT    NOT NULL,  -- in_progress, complete, failed
    byte_count       INTEGER NOT NULL DEFAULT 0,  -- uncompressed
    stored_bytes     INTEGER NOT NULL DEFAULT 0,  -- compressed
    chunk_count      INTEGER NOT NULL DEFAULT 0,
    sha256           TEXT,              -- hex of the uncompressed bytes, set when complete
    UNIQUE (snapshot_id, kind)
);

CREATE TABLE snapshot_chunks (
    part_id  INTEGER NOT NULL REFERENCES snapshot_parts (id),
    seq      INTEGER NOT NULL,
    data     BLOB    NOT NULL,  -- one zstd frame of up to 1 MiB of the part
    PRIMARY KEY (part_id, seq)
);
