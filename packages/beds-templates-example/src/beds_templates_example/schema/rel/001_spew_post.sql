-- SPEW posts (template spew_post, TLA spp) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file. Applications never send SQL: BEDS only calls the objects below by name,
-- with bound parameters. It is re-appliable (CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE).
--
-- Conventions the REL adapter relies on (packages/beds-rel/README.md):
--   * write procedures take the operation's params in the template's order;
--   * query procedures take the query's params, then p_limit (the row limit);
--   * spp_create and spp_update return the row's `returns` columns; an empty result from
--     spp_update means no post has that id;
--   * spp_delete returns one row with a `deleted` column (rows removed);
--   * DATETIME values are UTC (the adapter's sessions run with time_zone '+00:00').

CREATE TABLE IF NOT EXISTS spp_posts (
    id         BIGINT       NOT NULL AUTO_INCREMENT,
    author     VARCHAR(64)  NOT NULL,
    body       VARCHAR(280) NOT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT UTC_TIMESTAMP(6),
    updated_at DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    KEY spp_posts_author_created (author, created_at)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW spp_posts_v AS
    SELECT id, author, body, created_at, updated_at FROM spp_posts;

DELIMITER $$

CREATE OR REPLACE PROCEDURE spp_create(
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    INSERT INTO spp_posts (author, body) VALUES (p_author, p_body);
    SELECT id, created_at FROM spp_posts WHERE id = LAST_INSERT_ID();
END$$

-- A NULL argument keeps the current value (the adapter passes NULL for params not sent).
CREATE OR REPLACE PROCEDURE spp_update(
    IN p_id BIGINT,
    IN p_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    UPDATE spp_posts
       SET body = COALESCE(p_body, body), updated_at = UTC_TIMESTAMP(6)
     WHERE id = p_id;
    SELECT id, updated_at FROM spp_posts WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE spp_delete(IN p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    DELETE FROM spp_posts WHERE id = p_id;
    SELECT ROW_COUNT() AS deleted;
END$$

-- Newest first; p_limit is the row limit the adapter passes last.
CREATE OR REPLACE PROCEDURE spp_by_author(
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_limit INT UNSIGNED
)
READS SQL DATA
BEGIN
    SELECT id, author, body, created_at, updated_at
      FROM spp_posts
     WHERE author = p_author
     ORDER BY created_at DESC, id DESC
     LIMIT p_limit;
END$$

CREATE OR REPLACE FUNCTION spp_count_by_author(
    p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
RETURNS BIGINT
READS SQL DATA
BEGIN
    RETURN (SELECT COUNT(*) FROM spp_posts WHERE author = p_author);
END$$

DELIMITER ;
