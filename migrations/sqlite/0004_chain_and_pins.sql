-- Tamper evidence: each audit record carries the previous record's hash and
-- its own (SHA-256 over prev_hash and a canonical encoding of the record),
-- written in id order by the single audit writer.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

-- Operators pin snapshots that pruning must never remove.
ALTER TABLE snapshots ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
