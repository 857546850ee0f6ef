-- SPEW follows (template spew_follow, TLA sfl) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file; it is re-appliable (CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE).
-- BEDS only calls the objects below by name, with bound parameters (and selects from
-- sfl_follows_v). spew_post's home timeline (009_spew_post_threads.sql) reads sfl_follows.
--
--   * sfl_create is idempotent: a second follow of the same handle changes nothing and answers
--     the first one's row (one row per follower and followee: the primary key);
--   * following oneself is refused with SQLSTATE '23000' (BEDS-409, the message in details):
--     the home timeline already holds the member's own posts;
--   * sfl_delete returns `deleted` (0: not followed, BEDS-404).
-- Handles are not checked against beds_user: a domain reads only its own tables.

CREATE TABLE IF NOT EXISTS sfl_follows (
    follower   VARCHAR(64) NOT NULL,
    followee   VARCHAR(64) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (follower, followee),
    -- followers of a handle, in handle order (and the home timeline's authors)
    KEY sfl_follows_followee (followee, follower)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW sfl_follows_v AS
    SELECT follower, followee, created_at FROM sfl_follows;

DELIMITER $$

CREATE OR REPLACE PROCEDURE sfl_create(
    IN p_follower VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_followee VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    IF p_follower = p_followee THEN
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'spew_follow: a member cannot follow themselves';
    END IF;
    -- One statement: a follow repeated (or two at once) leaves the first row as it was.
    INSERT INTO sfl_follows (follower, followee) VALUES (p_follower, p_followee)
        ON DUPLICATE KEY UPDATE follower = follower;
    SELECT follower, followee, created_at
      FROM sfl_follows
     WHERE follower = p_follower AND followee = p_followee;
END$$

CREATE OR REPLACE PROCEDURE sfl_delete(
    IN p_follower VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_followee VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    DELETE FROM sfl_follows WHERE follower = p_follower AND followee = p_followee;
    SELECT ROW_COUNT() AS deleted;
END$$

CREATE OR REPLACE FUNCTION sfl_follower_count(
    p_followee VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
RETURNS BIGINT
READS SQL DATA
BEGIN
    RETURN (SELECT COUNT(*) FROM sfl_follows WHERE followee = p_followee);
END$$

CREATE OR REPLACE FUNCTION sfl_following_count(
    p_follower VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
RETURNS BIGINT
READS SQL DATA
BEGIN
    RETURN (SELECT COUNT(*) FROM sfl_follows WHERE follower = p_follower);
END$$

DELIMITER ;
