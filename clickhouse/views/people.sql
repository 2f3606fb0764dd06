-- People (OneID, 身份统一): who each linked anonymous id is.
-- identities: one row per (site_id, anonymous_id) that an identify linked, with the user_id of its
-- earliest identify. An event's person: its own user_id, else identities.person_id of its
-- anonymous_id, else its anonymous_id (views join on (site_id, anonymous_id)).
CREATE OR REPLACE VIEW clicktrail.identities AS
SELECT site_id, anonymous_id, argMinMerge(linked_user_id) AS person_id, min(identified_at) AS identified_at
FROM clicktrail.identity_links
GROUP BY site_id, anonymous_id;
