-- Channels and touches (渠道, 触点): every arrival through a channel, kept per anonymous id.
--
-- A touch is a page_view whose URL carries ch or utm_source, or whose referrer is on another host
-- than its URL; or an event without a URL that carries a channel or utm_source (server-side and pixel
-- touches). The channel fields the JS SDK stamps on later events, and the repeats of a landing URL on
-- the page's other events, are not touches.

-- Referrer domains and their channel: built-in classes (site_id '') and each site's own rules, which
-- the gateway rewrites from its config at every start. A referrer host takes the channel of the
-- longest domain it equals or ends in ('.' + domain), a site's rule before a class; none: the host.
CREATE TABLE IF NOT EXISTS clicktrail.referrer_channels
(
    site_id LowCardinality(String) COMMENT 'empty for the built-in classes',
    domain  String,
    channel String
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, domain);

INSERT INTO clicktrail.referrer_channels (site_id, domain, channel) VALUES
    ('', 'baidu.com', 'search'), ('', 'sogou.com', 'search'), ('', 'so.com', 'search'), ('', 'sm.cn', 'search'),
    ('', 'bing.com', 'search'), ('', 'google.com', 'search'), ('', 'google.com.hk', 'search'),
    ('', 'google.cn', 'search'), ('', 'qq.com', 'wechat'), ('', 'weibo.com', 'social'), ('', 'weibo.cn', 'social'),
    ('', 'zhihu.com', 'social'), ('', 'douyin.com', 'social'), ('', 'linkedin.com', 'social');

-- Looked up once per touch row by the views; reloaded by the gateway after it rewrites site rules.
CREATE DICTIONARY IF NOT EXISTS clicktrail.referrer_channels_dict
(
    site_id String,
    domain  String,
    channel String
)
PRIMARY KEY site_id, domain
SOURCE(CLICKHOUSE(DB 'clicktrail' TABLE 'referrer_channels'))
LIFETIME(MIN 0 MAX 300)
LAYOUT(COMPLEX_KEY_HASHED());

-- One row per touch. The channel is kept in parts: `direct` is decided by the event itself (the URL's
-- ch, else its utm_source; for a touch without URL its channel field, else its utm_source), and when it
-- is empty the referrer's host decides at query time, so a change of the referrer rules applies to
-- every touch ever stored. Ordered for the views' lookups: a person's touches in time order.
CREATE TABLE IF NOT EXISTS clicktrail.touches
(
    site_id       LowCardinality(String),
    anonymous_id  String,
    user_id       String,
    ts            DateTime64(3, 'UTC'),
    event_id      String,
    direct        String COMMENT 'the channel the event names itself; empty when its referrer decides',
    referrer_host String,
    sharer        String COMMENT 'the URL''s sharer parameter (the sharer field, for a touch without URL)'
)
ENGINE = ReplacingMergeTree
ORDER BY (site_id, anonymous_id, user_id, ts, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicktrail.touches_mv TO clicktrail.touches AS
SELECT site_id, anonymous_id, user_id, ts, event_id,
       if(url = '', if(channel_field != '', channel_field, utm_source_field),
          if(url_ch != '', url_ch, url_utm_source)) AS direct,
       referrer_host,
       if(url = '', sharer_field, url_sharer) AS sharer
FROM
(
    SELECT site_id, anonymous_id, user_id, ts, event_id, event, url, url_host, referrer_host,
           channel AS channel_field, utm_source AS utm_source_field, sharer AS sharer_field,
           decodeURLFormComponent(extractURLParameter(url, 'ch')) AS url_ch,
           decodeURLFormComponent(extractURLParameter(url, 'utm_source')) AS url_utm_source,
           decodeURLFormComponent(extractURLParameter(url, 'sharer')) AS url_sharer
    FROM clicktrail.events
)
WHERE (url = '' AND (channel_field != '' OR utm_source_field != ''))
   OR (event = 'page_view' AND (url_ch != '' OR url_utm_source != ''
                                OR (referrer_host != '' AND referrer_host != url_host)));
