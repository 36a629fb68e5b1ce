-- Every destructive SmartLead call is guarded, not only campaign deletes:
-- an operation and its snapshot name their operation (`campaign.delete`,
-- `campaign.lead.delete`, ...) and their target (`campaign:5/lead:7`, the
-- key single flight is claimed on; `target_id` is the lead, account, list
-- or other object's own id), and not every target has a campaign.
-- Rebuilding the two tables (to make `campaign_id` nullable) drops tables
-- others reference: migrations run with foreign keys off, and every
-- reference is checked after them (`db::migrate`).

CREATE TABLE operations_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL,  -- the operation's stable name
    campaign_id       INTEGER,           -- the campaign, when the target has one
    target            TEXT    NOT NULL,  -- campaign:5, campaign:5/lead:7, email_account:9, ...
    target_id         INTEGER,           -- the object's own id (lead, account, list, ...)
    state             TEXT    NOT NULL,
    request_id        TEXT    NOT NULL,
    actor_fingerprint TEXT,
    actor_label       TEXT,
    action            TEXT,
    would_action      TEXT,
    rule              TEXT,
    policy_revision   TEXT,
    snapshot_id       INTEGER,
    upstream_status   INTEGER,
    error             TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    owner             TEXT,
    heartbeat_at      TEXT,
    audit_id          INTEGER
);
INSERT INTO operations_new (id, kind, campaign_id, target, target_id, state, request_id,
    actor_fingerprint, actor_label, action, would_action, rule, policy_revision, snapshot_id,
    upstream_status, error, created_at, updated_at, owner, heartbeat_at, audit_id)
SELECT id, CASE kind WHEN 'delete_campaign' THEN 'campaign.delete' ELSE kind END,
    campaign_id, 'campaign:' || campaign_id, NULL, state, request_id,
    actor_fingerprint, actor_label, action, would_action, rule, policy_revision, snapshot_id,
    upstream_status, error, created_at, updated_at, owner, heartbeat_at, audit_id
FROM operations;
DROP TABLE operations;
ALTER TABLE operations_new RENAME TO operations;
-- Single flight: at most one unfinished operation per operation and target.
CREATE UNIQUE INDEX operations_active_target
    ON operations (kind, target)
    WHERE state IN ('received', 'deciding', 'snapshotting', 'acting');
CREATE INDEX operations_campaign ON operations (campaign_id, id);
CREATE INDEX operations_target_id ON operations (target_id, id);

CREATE TABLE snapshots_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id        INTEGER REFERENCES operations (id),
    operation           TEXT    NOT NULL,  -- the operation's stable name
    campaign_id         INTEGER,
    target              TEXT    NOT NULL,
    target_id           INTEGER,
    parts               TEXT    NOT NULL,  -- the part kinds a complete snapshot holds, comma-separated
    state               TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    completed_at        TEXT,
    error               TEXT,
    pinned              INTEGER NOT NULL DEFAULT 0,
    campaign_updated_at TEXT
);
INSERT INTO snapshots_new (id, operation_id, operation, campaign_id, target, target_id, parts,
    state, created_at, completed_at, error, pinned, campaign_updated_at)
SELECT id, operation_id, 'campaign.delete', campaign_id, 'campaign:' || campaign_id, NULL,
    'campaign,leads_csv,sequences,email_accounts,webhooks,analytics', state,
    created_at, completed_at, error, pinned, campaign_updated_at
FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_new RENAME TO snapshots;
CREATE INDEX snapshots_campaign ON snapshots (campaign_id, id);
CREATE INDEX snapshots_target ON snapshots (target, id);
CREATE INDEX snapshots_target_id ON snapshots (target_id, id);

-- The audit record names its target too (hashed only when present, so
-- existing chains still verify).
ALTER TABLE audit_events ADD COLUMN target TEXT;
CREATE INDEX audit_events_target ON audit_events (target, id) WHERE target IS NOT NULL;
