-- Where the hash chain starts: records from this id on must all be chained.
-- Older records (written before tamper evidence existed) are reported as
-- unchained; a record set to a NULL hash after this point is tampering.
CREATE TABLE audit_chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    chain_start INTEGER NOT NULL
);
INSERT INTO audit_chain (id, chain_start)
    SELECT 1, COALESCE(MAX(id), 0) + 1 FROM audit_events;
