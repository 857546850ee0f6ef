-- SPEW posts in batches (template spew_post, TLA spp): spp_create_many, the create_many
-- procedure (`batch_procedure` of spew_post's create).
--
-- The DBA owns this file; it is re-appliable (CREATE OR REPLACE).
--
-- The REL adapter's convention for a batch procedure: one IN parameter, a JSON array of the
-- records (objects keyed by the create's params, in request order); one result set with one
-- row per record in that order: `ordinal` (0-based position) and the create's `returns`.
-- Each record means what spp_create makes of it (a reply's parent must exist, hashtags are
-- indexed); any refusal refuses the whole batch (SIGNAL), and the adapter then finds the
-- refused records one by one. Like spp_create, it opens a transaction only when none is open.
--
-- The posts go in with ONE INSERT ... SELECT in request order: with innodb_autoinc_lock_mode
-- 0 or 1 (MariaDB's default is 1) such an insert takes consecutive ids, so the n-th record's
-- id is the first id + n; the procedure checks that and refuses otherwise (lock mode 2).

DELIMITER $$

CREATE OR REPLACE PROCEDURE spp_create_many(IN p_records JSON)
MODIFIES SQL DATA
BEGIN
    DECLARE v_own BOOLEAN DEFAULT @@in_transaction = 0;
    DECLARE v_count INT DEFAULT JSON_LENGTH(p_records);
    DECLARE v_first BIGINT;
    DECLARE v_done BOOLEAN DEFAULT FALSE;
    DECLARE v_id BIGINT;
    DECLARE v_body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
    DECLARE tagged CURSOR FOR
        SELECT id, body FROM spp_posts
         WHERE id BETWEEN v_first AND v_first + v_count - 1 AND body LIKE '%#%';
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = TRUE;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        IF v_own THEN
            ROLLBACK;
        END IF;
        RESIGNAL;
    END;
    IF EXISTS (
        SELECT 1
          FROM JSON_TABLE(p_records, '$[*]' COLUMNS (parent_id BIGINT PATH '$.parent_id')) AS r
         WHERE r.parent_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM spp_posts AS p WHERE p.id = r.parent_id)
    ) THEN
        SIGNAL SQLSTATE '23000'
            SET MESSAGE_TEXT = 'spew_post: the post replied to (parent_id) does not exist';
    END IF;
    IF v_own THEN
        START TRANSACTION;
    END IF;
    INSERT INTO spp_posts (author, body, parent_id)
    SELECT r.author, r.body, r.parent_id
      FROM JSON_TABLE(p_records, '$[*]' COLUMNS (
               ordinal FOR ORDINALITY,
               author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
                   PATH '$.author' ERROR ON EMPTY,
               body VARCHAR(280) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
                   PATH '$.body' ERROR ON EMPTY,
               parent_id BIGINT PATH '$.parent_id'
           )) AS r
     ORDER BY r.ordinal;
    SET v_first = LAST_INSERT_ID();
    IF ROW_COUNT() <> v_count OR (
        SELECT COUNT(*) FROM spp_posts WHERE id BETWEEN v_first AND v_first + v_count - 1
    ) <> v_count THEN
        SIGNAL SQLSTATE 'HY000'
            SET MESSAGE_TEXT = 'spp_create_many: the posts did not get consecutive ids';
    END IF;
    OPEN tagged;
    tags: LOOP
        FETCH tagged INTO v_id, v_body;
        IF v_done THEN
            LEAVE tags;
        END IF;
        CALL spp_tag(v_id, v_body);
    END LOOP tags;
    CLOSE tagged;
    IF v_own THEN
        COMMIT;
    END IF;
    SELECT id - v_first AS ordinal, id, created_at
      FROM spp_posts
     WHERE id BETWEEN v_first AND v_first + v_count - 1
     ORDER BY id;
END$$

DELIMITER ;
