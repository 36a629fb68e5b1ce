-- The campaign and actor indexes only over the records that have one: most
-- passthrough records name no actor (without gateway keys or configured
-- actors), and many no campaign, so their rows skip those index writes.
-- Lookups by `campaign_id = ?` or `actor_label = ?` still use them.
DROP INDEX audit_events_campaign;
CREATE INDEX audit_events_campaign ON audit_events (campaign_id, id) WHERE campaign_id IS NOT NULL;
DROP INDEX audit_events_actor;
CREATE INDEX audit_events_actor ON audit_events (actor_label, id) WHERE actor_label IS NOT NULL;
