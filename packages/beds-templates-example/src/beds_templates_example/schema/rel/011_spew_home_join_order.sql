-- SPEW's home timeline (spew_post's home query): the viewer's authors first, then their posts.
--
-- The DBA owns this file; it is re-appliable (CREATE OR REPLACE) and replaces the spp_home_v of
-- 009_spew_post_threads.sql with the same columns and rows.
--
-- MariaDB knows nothing of the UNION's row count before it runs, so for
-- `WHERE viewer = ? ORDER BY id DESC LIMIT ?` it read the whole of spp_posts and joined each
-- row to the viewer's few authors: every home page cost a scan of every post (65 ms at 300,000
-- posts, 48 ms for a viewer who follows nobody). STRAIGHT_JOIN keeps the written order: the
-- viewer's follows and own handle (the viewer condition is pushed into both branches), then
-- each author's posts through spp_posts_author_created; 8 ms for 1,000 followed posts, 0.5 ms
-- for none. like_count, reply_count and liked_by_me are still read for each of the viewer's
-- posts before the page is cut (about 6 ms per 1,000 posts).

CREATE OR REPLACE VIEW spp_home_v AS
    SELECT h.viewer, p.id, p.author, p.body, p.parent_id, p.created_at, p.updated_at,
           (SELECT COUNT(*) FROM spl_likes AS l WHERE l.post_id = p.id) AS like_count,
           (SELECT COUNT(*) FROM spp_posts AS r WHERE r.parent_id = p.id) AS reply_count,
           EXISTS (SELECT 1 FROM spl_likes AS m WHERE m.post_id = p.id AND m.liker = h.viewer)
               AS liked_by_me
      FROM (SELECT follower AS viewer, followee AS author FROM sfl_follows
            UNION ALL
            SELECT DISTINCT author AS viewer, author FROM spp_posts) AS h
      STRAIGHT_JOIN spp_posts AS p ON p.author = h.author;
