-- The campaign's `updated_at` as SmartLead gave it when the snapshot was
-- taken: a retry of the same delete may use a recent complete snapshot
-- instead of capturing again only while this has not changed.
--
-- Operations gain a final state (no schema change: `state` is TEXT):
-- `snapshot_pending`, for a request answered 503 before its snapshot was
-- complete; its capture went on in the background while the operation kept
-- the campaign claimed (`snapshotting`), and the operation ends once the
-- capture does. It never acts; the snapshot's own state says how it ended.
ALTER TABLE snapshots ADD COLUMN campaign_updated_at TEXT;
