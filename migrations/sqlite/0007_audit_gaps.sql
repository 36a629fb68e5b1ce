-- Audit loss is never silent: a record can carry a note for people (a gap
-- record says how many records were lost, when, and why; an interrupted
-- operation's record says where it stopped). Hashed only when present, so
-- existing chains still verify.
ALTER TABLE audit_events ADD COLUMN detail TEXT;

-- The audit record written for an operation a stopped gateway left behind.
ALTER TABLE operations ADD COLUMN audit_id INTEGER;
