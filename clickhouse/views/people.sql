-- People (OneID, 身份统一): who each linked anonymous id is, and the rule that gives any event its person.

-- persons: the identity map in memory, one entry per (site_id, anonymous_id) an identify linked, with the
-- user_id of its earliest identify (identity_links, migration 0002). Every view resolves persons through it
-- at query time, so an identify that arrives weeks after the visits it links re-attributes them all
-- without rewriting a row. A hash lookup per row costs a fraction of a join against the map, which each
-- query would otherwise rebuild. LIFETIME(0): it is never reloaded on a timer; the gateway reloads it when
-- it opens the store and after every load that wrote to identity_links (Store.refresh_persons), so a view
-- is exact as soon as the events it counts are queryable.
CREATE OR REPLACE DICTIONARY clicktrail.persons
(
    site_id       String,
    anonymous_id  String,
    person_id     String,
    identified_at DateTime64(3, 'UTC')
)
PRIMARY KEY site_id, anonymous_id
SOURCE(CLICKHOUSE(QUERY 'SELECT site_id, anonymous_id, argMinMerge(linked_user_id) AS person_id, min(identified_at) AS identified_at FROM clicktrail.identity_links GROUP BY site_id, anonymous_id'))
LIFETIME(0)
LAYOUT(COMPLEX_KEY_HASHED());

-- clicktrail_person(site_id, anonymous_id, user_id): an event's person: its own user_id, else the user_id its
-- anonymous id was linked to, else the anonymous id. Analysts may call it on any event.
CREATE OR REPLACE FUNCTION clicktrail_person AS (site, anonymous, user) ->
    if(user != '', user, dictGetOrDefault('clicktrail.persons', 'person_id', (site, anonymous), anonymous));

-- identities: one row per (site_id, anonymous_id) that an identify linked, with its person and the time of
-- its earliest identify.
CREATE OR REPLACE VIEW clicktrail.identities AS
SELECT site_id, anonymous_id, person_id, identified_at
FROM clicktrail.persons;
