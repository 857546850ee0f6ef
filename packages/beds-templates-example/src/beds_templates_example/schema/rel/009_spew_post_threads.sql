-- SPEW posts as a product (template spew_post, TLA spp): replies, hashtags, counts, timelines.
--
-- The DBA owns this file; it is re-appliable (IF NOT EXISTS, CREATE OR REPLACE) and runs after
-- 001_spew_post.sql (the posts), 007_spew_follow.sql and 008_spew_like.sql, whose tables the
-- views read. It replaces 001's spp_create, spp_update, spp_delete and spp_posts_v.
--
--   * replies: spp_posts.parent_id names the post replied to. spp_create refuses a reply to a
--     post that does not exist with SQLSTATE '23000' (BEDS-409, the message in details).
--     Deleting a post keeps its replies (their parent_id then names no post) and drops its
--     likes and hashtags.
--   * hashtags: spp_create and spp_update put each #tag of the body (letters, digits and _,
--     as PCRE's \p{L}\p{N}_) into spp_hashtags, lower-cased, once per post; spp_tagged_v is
--     what spew_post's by_hashtag query reads. A search compares with the table's collation,
--     utf8mb4_unicode_ci: without regard to case (nor to accents: #cafe finds #café).
--   * counts: like_count and reply_count are counted when a post is read (indexed lookups
--     per post on a page), never stored, so they cannot drift.
--   * the home timeline, spp_home_v: one row per post and viewer who sees it (the author
--     and each follower of the author), with liked_by_me for that viewer. The node reads it
--     WHERE viewer = ? ORDER BY id DESC LIMIT ?; MariaDB pushes the viewer condition into
--     both branches of the UNION (condition_pushdown_for_derived), so a page reads the
--     viewer's follows and their authors' posts only.
--
-- Writes that change several rows (a post and its hashtags) must be all or nothing. Under an
-- idempotency key (or a journal) the adapter runs the call in its own transaction, which a
-- procedure must not commit; otherwise the session autocommits each statement. So these
-- procedures open a transaction only when none is open (@@in_transaction = 0), and roll back
-- only that one when a statement fails.

ALTER TABLE spp_posts ADD COLUMN IF NOT EXISTS parent_id BIGINT NULL DEFAULT NULL AFTER body;

-- The replies query (parent_id = ? ORDER BY id) and reply counts.
CREATE INDEX IF NOT EXISTS spp_posts_parent ON spp_posts (parent_id, id);

CREATE TABLE IF NOT EXISTS spp_hashtags (
    tag     VARCHAR(280) NOT NULL,
    post_id BIGINT       NOT NULL,
    PRIMARY KEY (tag, post_id),
    KEY spp_hashtags_post (post_id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW spp_posts_v AS
    SELECT p.id, p.author, p.body, p.parent_id, p.created_at, p.updated_at,
           (SELECT COUNT(*) FROM spl_likes AS l WHERE l.post_id = p.id) AS like_count,
           (SELECT COUNT(*) FROM spp_posts AS r WHERE r.parent_id = p.id) AS reply_count
      FROM spp_posts AS p;

CREATE OR REPLACE VIEW spp_tagged_v AS
    SELECT t.tag, p.id, p.author, p.body, p.parent_id, p.created_at, p.updated_at,
           (SELECT COUNT(*) FROM spl_likes AS l WHERE l.post_id = p.id) AS like_count,
           (SELECT COUNT(*) FROM spp_posts AS r WHERE r.parent_id = p.id) AS reply_count
      FROM spp_hashtags AS t
      JOIN spp_posts AS p ON p.id = t.post_id;

CREATE OR REPLACE VIEW spp_home_v AS
    SELECT h.viewer, p.id, p.author, p.body, p.parent_id, p.created_at, p.updated_at,
           (SELECT COUNT(*) FROM spl_likes AS l WHERE l.post_id = p.id) AS like_count,
           (SELECT COUNT(*) FROM spp_posts AS r WHERE r.parent_id = p.id) AS reply_count,
           EXISTS (SELECT 1 FROM spl_likes AS m WHERE m.post_id = p.id AND m.liker = h.viewer)
               AS liked_by_me
      FROM (SELECT follower AS viewer, followee AS author FROM sfl_follows
            UNION ALL
            SELECT DISTINCT author AS viewer, author FROM spp_posts) AS h
      JOIN spp_posts AS p ON p.author = h.author;

DELIMITER $$

-- The hashtags of one post, from its body (spp_create and spp_update call it).
CREATE OR REPLACE PROCEDURE spp_tag(
    IN p_post_id BIGINT,
    IN p_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_rest VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
        DEFAULT p_body;
    DECLARE v_tag VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
    DECLARE v_at INT;
    DELETE FROM spp_hashtags WHERE post_id = p_post_id;
    tags: LOOP
        SET v_at = REGEXP_INSTR(v_rest, '#[\\p{L}\\p{N}_]+');
        IF v_at = 0 THEN
            LEAVE tags;
        END IF;
        SET v_tag = REGEXP_SUBSTR(v_rest, '#[\\p{L}\\p{N}_]+');
        INSERT INTO spp_hashtags (tag, post_id) VALUES (LOWER(SUBSTRING(v_tag, 2)), p_post_id)
            ON DUPLICATE KEY UPDATE post_id = post_id;
        SET v_rest = SUBSTRING(v_rest, v_at + CHAR_LENGTH(v_tag));
    END LOOP tags;
END$$

CREATE OR REPLACE PROCEDURE spp_create(
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_parent_id BIGINT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_own BOOLEAN DEFAULT @@in_transaction = 0;
    DECLARE v_id BIGINT;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        IF v_own THEN
            ROLLBACK;
        END IF;
        RESIGNAL;
    END;
    IF p_parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spp_posts WHERE id = p_parent_id)
    THEN
        SIGNAL SQLSTATE '23000'
            SET MESSAGE_TEXT = 'spew_post: the post replied to (parent_id) does not exist';
    END IF;
    IF v_own THEN
        START TRANSACTION;
    END IF;
    INSERT INTO spp_posts (author, body, parent_id) VALUES (p_author, p_body, p_parent_id);
    SET v_id = LAST_INSERT_ID();
    CALL spp_tag(v_id, p_body);
    IF v_own THEN
        COMMIT;
    END IF;
    SELECT id, created_at FROM spp_posts WHERE id = v_id;
END$$

-- A NULL body keeps the current one (the adapter passes NULL for params not sent); an empty
-- result means no post has that id (BEDS-404).
CREATE OR REPLACE PROCEDURE spp_update(
    IN p_id BIGINT,
    IN p_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_own BOOLEAN DEFAULT @@in_transaction = 0;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        IF v_own THEN
            ROLLBACK;
        END IF;
        RESIGNAL;
    END;
    IF v_own THEN
        START TRANSACTION;
    END IF;
    UPDATE spp_posts
       SET body = COALESCE(p_body, body), updated_at = UTC_TIMESTAMP(6)
     WHERE id = p_id;
    IF ROW_COUNT() > 0 AND p_body IS NOT NULL THEN
        CALL spp_tag(p_id, p_body);
    END IF;
    IF v_own THEN
        COMMIT;
    END IF;
    SELECT id, updated_at FROM spp_posts WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE spp_delete(IN p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_own BOOLEAN DEFAULT @@in_transaction = 0;
    DECLARE v_deleted INT DEFAULT 0;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        IF v_own THEN
            ROLLBACK;
        END IF;
        RESIGNAL;
    END;
    IF v_own THEN
        START TRANSACTION;
    END IF;
    DELETE FROM spp_posts WHERE id = p_id;
    SET v_deleted = ROW_COUNT();
    IF v_deleted > 0 THEN
        DELETE FROM spp_hashtags WHERE post_id = p_id;
        DELETE FROM spl_likes WHERE post_id = p_id;
    END IF;
    IF v_own THEN
        COMMIT;
    END IF;
    SELECT v_deleted AS deleted;
END$$

DELIMITER ;
