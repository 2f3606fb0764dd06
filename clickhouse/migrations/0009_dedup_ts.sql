-- The loader's dedup index, in place of 0001's by_event_id, so that an insert costs what its batch holds,
-- not what the table holds. Before each insert the loader looks up every row of the batch in this index;
-- ordered by (site_id, event_id), random ids put a batch's lookups in every granule of its sites, so each
-- insert read every id stored. Here the ids are ordered under dedup_ts: a batch's rows lie where the
-- events of its last seconds lie, plus a granule for each straggler (an event sent late, a backfill).
--
-- dedup_ts must be the same for every copy of an event (its retries, days later too, and the loader's own
-- retries of a segment), which ts is not: ts is corrected with the sent_at of the request that carried the
-- copy, or is the time the gateway received it when the client sent none. So dedup_ts is the event's ts
-- as the client sent it, before the correction; 1970-01-01 00:00:00 when a client sent an event_id without
-- ts (those are looked up among all such events of the site); ts when the gateway made the event_id (a
-- pixel without one: only identical rows repeat it). The gateway sets it (gateway/rows.py). A retry must
-- carry the event's ts unchanged: the same event_id with another ts is stored again.
--
-- Rows stored before this migration take ts as dedup_ts (their client time was not kept): a client's retry,
-- after the upgrade, of an event stored before it is recognised only when its ts needed no correction.
-- The projection lives in the same parts as the rows, as by_event_id did, so it never disagrees with them,
-- even after a crash in the middle of an insert. 256-row granules in blocks of a few KB make a straggler's
-- lookup read about 10 KB, not a table granule's 8192 rows. It is materialized for the parts stored already
-- in the background (chDB would wait by default), so the gateway starts at once: that takes about a minute
-- per 100 million events on 2 cores, and until every part has it the loader looks up in the table instead,
-- as exact, only slower (see Store.insert_segments). Dropping by_event_id runs in the background too.
ALTER TABLE clicktrail.events
    ADD COLUMN IF NOT EXISTS dedup_ts DateTime64(3, 'UTC') DEFAULT ts
    COMMENT 'the loader''s dedup key with site_id and event_id: ts as the client sent it, before the skew correction';

ALTER TABLE clicktrail.events
    ADD PROJECTION IF NOT EXISTS by_dedup_ts (SELECT site_id, dedup_ts, event_id ORDER BY site_id, dedup_ts, event_id)
    WITH SETTINGS (index_granularity = 256, min_compress_block_size = 4096, max_compress_block_size = 8192);

ALTER TABLE clicktrail.events MATERIALIZE PROJECTION by_dedup_ts SETTINGS mutations_sync = 0;

ALTER TABLE clicktrail.events DROP PROJECTION IF EXISTS by_event_id SETTINGS mutations_sync = 0, alter_sync = 0;
