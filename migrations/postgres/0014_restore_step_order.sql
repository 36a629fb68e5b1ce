-- The order a restore's steps were done in (SQLite's 0014 fills it from
-- its rowid; here every step already gets one).
ALTER TABLE restore_steps ADD COLUMN seq BIGINT;
