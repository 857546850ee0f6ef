-- SPEW's home timeline (spew_post's home query): each author's posts through their index, always.
--
-- The DBA owns this file; it is re-appliable (CREATE OR REPLACE) and replaces the spp_home_v of
-- 011_spew_home_join_order.sql with the same columns and rows.
--
-- BEDS' sessions run with optimizer_adjust_secondary_key_costs = disable_max_seek (beds_rel's
-- adapter, for keyset pages). With it, when spp_posts holds few authors (the benchmark's: one
-- author with hundreds of thousands of posts, one followed author with 1,000), MariaDB costed
-- `ref` on spp_posts_author_created above a full scan and read every post for every home page
-- (440,505 rows read for a page of 21 at 440,000 posts; 1 s a page at 16 pages in flight).
-- FORCE INDEX keeps the 1,001 rows of the followed author's posts whatever the statistics.

CREATE OR REPLACE VIEW spp_home_v AS
    SELECT h.viewer, p.id, p.author, p.body, p.parent_id, p.created_at, p.updated_at,
           (SELECT COUNT(*) FROM spl_likes AS l WHERE l.post_id = p.id) AS like_count,
           (SELECT COUNT(*) FROM spp_posts AS r WHERE r.parent_id = p.id) AS reply_count,
           EXISTS (SELECT 1 FROM spl_likes AS m WHERE m.post_id = p.id AND m.liker = h.viewer)
               AS liked_by_me
      FROM (SELECT follower AS viewer, followee AS author FROM sfl_follows
            UNION ALL
            SELECT DISTINCT author AS viewer, author FROM spp_posts) AS h
      STRAIGHT_JOIN spp_posts AS p FORCE INDEX (spp_posts_author_created)
        ON p.author = h.author;
