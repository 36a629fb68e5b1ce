-- Restores: a snapshot rebuilt as a new campaign through SmartLead's API,
-- step by step, so a restore that stopped (Ctrl-C, a crash, a persistent
-- SmartLead error) continues where it was without a second campaign or a
-- lead added twice.
CREATE TABLE restores (
    id              INTEGER PRIMARY KEY,
    snapshot_id     INTEGER NOT NULL REFERENCES snapshots (id),
    name            TEXT    NOT NULL,   -- the new campaign's name
    leads_choice    TEXT    NOT NULL,   -- sendable | all
    state           TEXT    NOT NULL,   -- running | done | failed
    new_campaign_id INTEGER,
    operator        TEXT    NOT NULL,   -- OS user or gateway key name
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    error           TEXT
);
CREATE INDEX restores_snapshot ON restores (snapshot_id);

-- One row per completed step: `create`, `settings`, `schedule`,
-- `sequences`, `webhook:N`, `email_accounts`, `leads:N` (a batch).
CREATE TABLE restore_steps (
    restore_id INTEGER NOT NULL REFERENCES restores (id),
    step       TEXT    NOT NULL,
    done_at    TEXT    NOT NULL,
    result     TEXT,                    -- JSON: new ids, counts, SmartLead's reasons
    PRIMARY KEY (restore_id, step)
);
