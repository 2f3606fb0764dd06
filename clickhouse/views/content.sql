-- Content (内容): content_engagement, downloads_by_file, sharer_stats, over the rollups of migration 0006,
-- the identity map and touch_channels (views/channels.sql).

-- Internal: content_hits with each row's person (clicktrail_person) and its distinct events.
CREATE OR REPLACE VIEW clicktrail.content_hit_persons AS
SELECT site_id, event, object, sharer, clicktrail_person(site_id, anonymous_id, user_id) AS person_id,
       n AS hits, first_at AS first_ts, last_at AS last_ts
FROM (
    SELECT site_id, event, object, sharer, anonymous_id, user_id, uniqExactMerge(hits) AS n,
           min(first_ts) AS first_at, max(last_ts) AS last_at
    FROM clicktrail.content_hits
    GROUP BY site_id, event, object, sharer, anonymous_id, user_id
);

-- content_engagement: per (site_id, url_path) with a page_view or a page_leave: page views (浏览量),
-- distinct persons who viewed it (阅读人数), mean props.engaged_ms of its page_leaves (平均阅读时长) and the
-- share of them with props.scroll_pct >= 90 (完读率); 0 without a page_leave. page_leaves is read FINAL:
-- once per event.
CREATE OR REPLACE VIEW clicktrail.content_engagement AS
SELECT site_id, url_path, n_views AS views, n_readers AS readers,
       if(n_leaves = 0, 0., engaged / n_leaves) AS avg_engaged_ms,
       if(n_leaves = 0, 0., read_through / n_leaves) AS read_through_rate
FROM (
    SELECT site_id, url_path, sum(v) AS n_views, uniqExactIf(person_id, v > 0) AS n_readers, sum(l) AS n_leaves,
           sum(ms) AS engaged, sum(rt) AS read_through
    FROM (
        SELECT site_id, object AS url_path, person_id, hits AS v, 0 AS l, 0. AS ms, 0 AS rt
        FROM clicktrail.content_hit_persons
        WHERE event = 'page_view'
        UNION ALL
        SELECT site_id, url_path, '', 0, 1, engaged_ms, scroll_pct >= 90
        FROM clicktrail.page_leaves FINAL
    )
    GROUP BY site_id, url_path
);

-- downloads_by_file: per (site_id, props.file_url) of download events: downloads (下载次数) and distinct
-- persons who downloaded it (下载人数).
CREATE OR REPLACE VIEW clicktrail.downloads_by_file AS
SELECT site_id, object AS file_url, sum(hits) AS downloads, uniqExact(person_id) AS persons
FROM clicktrail.content_hit_persons
WHERE event = 'download'
GROUP BY site_id, file_url;

-- sharer_stats: per (site_id, sharer) for every non-empty sharer field of a page_view or page_leave, and every
-- non-empty sharer of a person's first touch (分享人). views, readers and avg_engaged_ms count the page_views
-- and page_leaves carrying the sharer field; registrations and leads count the persons whose first touch ever
-- (by ts, then event_id) carried the sharer and who have a registration (报名), a form_submit (留资) at any time,
-- before that touch too.
CREATE OR REPLACE VIEW clicktrail.sharer_stats AS
WITH
    recruits AS (SELECT site_id, person_id, sharer AS first_sharer FROM clicktrail.first_touch_channels),
    converted AS (
        SELECT site_id, person_id, max(event = 'registration') AS registered, max(event = 'form_submit') AS submitted
        FROM clicktrail.content_hit_persons
        WHERE event IN ('registration', 'form_submit')
        GROUP BY site_id, person_id
    )
SELECT site_id, sharer, n_views AS views, n_readers AS readers,
       if(n_leaves = 0, 0., engaged / n_leaves) AS avg_engaged_ms, n_registered AS registrations,
       n_submitted AS leads
FROM (
    SELECT site_id, sharer, sum(v) AS n_views, uniqExactIf(person_id, v > 0) AS n_readers, sum(l) AS n_leaves,
           sum(ms) AS engaged, sum(reg) AS n_registered, sum(sub) AS n_submitted
    FROM (
        SELECT site_id, sharer, person_id, hits AS v, 0 AS l, 0. AS ms, 0 AS reg, 0 AS sub
        FROM clicktrail.content_hit_persons
        WHERE event = 'page_view' AND sharer != ''
        UNION ALL
        SELECT site_id, sharer, '', 0, 1, engaged_ms, 0, 0
        FROM clicktrail.page_leaves FINAL
        WHERE sharer != ''
        UNION ALL
        SELECT r.site_id, r.first_sharer, r.person_id, 0, 0, 0., c.registered, c.submitted
        FROM recruits AS r
        LEFT JOIN converted AS c ON c.site_id = r.site_id AND c.person_id = r.person_id
        WHERE r.first_sharer != ''
    )
    GROUP BY site_id, sharer
);
