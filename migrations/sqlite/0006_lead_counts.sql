-- Data rows of a CSV part (the leads in a leads export), counted while it is
-- captured, so listings can show lead counts without re-reading the data.
ALTER TABLE snapshot_parts ADD COLUMN rows INTEGER;
