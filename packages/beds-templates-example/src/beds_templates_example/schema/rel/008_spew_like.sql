-- SPEW likes (template spew_like, TLA spl) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file; it is re-appliable (CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE)
-- and runs after 001_spew_post.sql, whose table spl_create reads. spew_post's views
-- (009_spew_post_threads.sql) count the likes of each post from spl_likes.
--
--   * spl_create is idempotent: a second like of the same post changes nothing and answers the
--     first one's row (one row per liker and post: the primary key);
--   * a like of a post that does not exist is refused with SQLSTATE '23000' (BEDS-409, the
--     message in details);
--   * spl_delete returns `deleted` (0: not liked, BEDS-404).

CREATE TABLE IF NOT EXISTS spl_likes (
    liker      VARCHAR(64) NOT NULL,
    post_id    BIGINT      NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (liker, post_id),
    -- a post's likes (its count, who likes it) in liker order
    KEY spl_likes_post (post_id, liker)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW spl_likes_v AS
    SELECT liker, post_id, created_at FROM spl_likes;

DELIMITER $$

CREATE OR REPLACE PROCEDURE spl_create(
    IN p_liker VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_post_id BIGINT
)
MODIFIES SQL DATA
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spp_posts WHERE id = p_post_id) THEN
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'spew_like: no post has that post_id';
    END IF;
    -- One statement: a like repeated (or two at once) leaves the first row as it was.
    INSERT INTO spl_likes (liker, post_id) VALUES (p_liker, p_post_id)
        ON DUPLICATE KEY UPDATE liker = liker;
    SELECT liker, post_id, created_at
      FROM spl_likes
     WHERE liker = p_liker AND post_id = p_post_id;
END$$

CREATE OR REPLACE PROCEDURE spl_delete(
    IN p_liker VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_post_id BIGINT
)
MODIFIES SQL DATA
BEGIN
    DELETE FROM spl_likes WHERE liker = p_liker AND post_id = p_post_id;
    SELECT ROW_COUNT() AS deleted;
END$$

CREATE OR REPLACE FUNCTION spl_count_by_post(p_post_id BIGINT)
RETURNS BIGINT
READS SQL DATA
BEGIN
    RETURN (SELECT COUNT(*) FROM spl_likes WHERE post_id = p_post_id);
END$$

DELIMITER ;
