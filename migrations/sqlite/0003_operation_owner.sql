-- Which gateway process runs an unfinished operation, and when it last said
-- so: start-up recovery must only take over operations whose gateway is gone,
-- never one that another live gateway on the same database is running.
ALTER TABLE operations ADD COLUMN owner TEXT;         -- host:pid:instance
ALTER TABLE operations ADD COLUMN heartbeat_at TEXT;  -- RFC 3339, refreshed while it runs
