-- An author's statistics for spew_post's `author_stats` query (TLA spp), in one call.
--
-- The DBA owns this file; it is re-appliable (CREATE OR REPLACE) and runs after
-- 001_spew_post.sql, whose table it reads. BEDS calls the procedure by name with bound values:
--
--     CALL `spp_author_stats`(%s, %s, @beds_v1)    -- p_author, p_limit, then the OUT parameter
--     SELECT @beds_v1 AS `total`                   -- on the same connection
--
-- and answers one record, each result set under the name spew_post.toml gives it
-- (result_sets = ["posts", "per_day"]) and the OUT value under its own (out = ["total"]):
--
--     {"posts": [{"id": 41, "body": "…", …}, …],
--      "per_day": [{"day": "2026-12-04", "post_count": 3}, …],
--      "total": 12}
--
-- The procedure returns exactly the declared result sets, in their order (a `SELECT … INTO` is
-- not one), and applies p_limit to each.

DELIMITER $$

CREATE OR REPLACE PROCEDURE spp_author_stats(
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_limit INT UNSIGNED,
    OUT p_total BIGINT
)
READS SQL DATA
BEGIN
    -- posts: the latest first
    SELECT id, author, body, created_at, updated_at
      FROM spp_posts
     WHERE author = p_author
     ORDER BY created_at DESC, id DESC
     LIMIT p_limit;
    -- per_day: posts per day (UTC), the latest day first
    SELECT DATE(created_at) AS day, COUNT(*) AS post_count
      FROM spp_posts
     WHERE author = p_author
     GROUP BY DATE(created_at)
     ORDER BY day DESC
     LIMIT p_limit;
    SELECT COUNT(*) INTO p_total FROM spp_posts WHERE author = p_author;
END$$

DELIMITER ;
