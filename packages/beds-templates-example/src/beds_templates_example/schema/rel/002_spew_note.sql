-- SPEW notes (template spew_note, TLA spn) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file. BEDS only calls the objects below by name, with bound parameters (and
-- selects from spn_notes_v). It is re-appliable (CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE).
--
-- spew_note has `locking = true`, so its procedures follow the REL locking convention
-- (docs/rel.md, "Optimistic locking"):
--   * the version column starts at 1 (its default), and every change adds 1;
--   * spn_update and spn_delete receive the version the caller read (p_version) and change the
--     row only WHERE id = p_id AND version = p_version;
--   * when nothing changed although the row exists, they SIGNAL SQLSTATE '45409' (the adapter
--     answers BEDS-409V with the current version); when no row has the key, spn_update returns
--     an empty result and spn_delete `deleted` = 0 (BEDS-404), as without locking.
-- It also has `journal = true`: the adapter runs each write in a transaction with its journal
-- entry, so these procedures must not COMMIT.

CREATE TABLE IF NOT EXISTS spn_notes (
    id         BIGINT        NOT NULL AUTO_INCREMENT,
    author     VARCHAR(64)   NOT NULL,
    body       VARCHAR(2000) NOT NULL,
    version    INT UNSIGNED  NOT NULL DEFAULT 1,
    created_at DATETIME(6)   NOT NULL DEFAULT UTC_TIMESTAMP(6),
    updated_at DATETIME(6)   NULL DEFAULT NULL,
    PRIMARY KEY (id),
    -- The `mine` queries: author = ? ORDER BY created_at DESC, id DESC, after a cursor.
    KEY spn_notes_author_created (author, created_at, id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW spn_notes_v AS
    SELECT id, author, body, version, created_at, updated_at FROM spn_notes;

DELIMITER $$

CREATE OR REPLACE PROCEDURE spn_create(
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_body VARCHAR(2000) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    INSERT INTO spn_notes (author, body) VALUES (p_author, p_body);
    SELECT id, version, created_at FROM spn_notes WHERE id = LAST_INSERT_ID();
END$$

-- A NULL body keeps the current one (the adapter passes NULL for params not sent).
CREATE OR REPLACE PROCEDURE spn_update(
    IN p_id BIGINT,
    IN p_version BIGINT,
    IN p_body VARCHAR(2000) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    UPDATE spn_notes
       SET body = COALESCE(p_body, body), version = version + 1,
           updated_at = UTC_TIMESTAMP(6)
     WHERE id = p_id AND version = p_version;
    IF ROW_COUNT() = 0 AND EXISTS (SELECT 1 FROM spn_notes WHERE id = p_id) THEN
        SIGNAL SQLSTATE '45409' SET MESSAGE_TEXT = 'spew_note: stale version';
    END IF;
    SELECT id, version, updated_at FROM spn_notes WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE spn_delete(IN p_id BIGINT, IN p_version BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_deleted INT DEFAULT 0;
    DELETE FROM spn_notes WHERE id = p_id AND version = p_version;
    SET v_deleted = ROW_COUNT();
    IF v_deleted = 0 AND EXISTS (SELECT 1 FROM spn_notes WHERE id = p_id) THEN
        SIGNAL SQLSTATE '45409' SET MESSAGE_TEXT = 'spew_note: stale version';
    END IF;
    SELECT v_deleted AS deleted;
END$$

DELIMITER ;
