-- The order a restore's steps were done in, as a column both stores have
-- (it was SQLite's rowid).
ALTER TABLE restore_steps ADD COLUMN seq INTEGER;
UPDATE restore_steps SET seq = rowid;
