-- What a restore set out to do and, once it ends, its report, so the admin
-- API can show a restore's progress and result without reading the
-- snapshot's leads again.
ALTER TABLE restores ADD COLUMN leads_total INTEGER;   -- leads the plan sends
ALTER TABLE restores ADD COLUMN calls_total INTEGER;   -- calls the plan makes
ALTER TABLE restores ADD COLUMN report TEXT;           -- JSON, once done
