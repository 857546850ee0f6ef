-- Retention of SPEW notes (template spew_note, TLA spn): notes older than a year are archived.
--
-- The DBA owns this file; it is re-appliable (IF NOT EXISTS, CREATE OR REPLACE) and runs after
-- 002_spew_note.sql, whose table it reads.
--
-- spew_note declares `retention_days = 365` and `[retention] procedure = "spn_retire"`. BEDS
-- runs the sweep as a long operation (docs/calgon.md, "Retention"), calling, once per step,
--
--     CALL `spn_retire`(%s, %s, %s, %s)    -- p_before, p_limit, p_step, p_steps
--
-- until a call returns no result set. Each call moves at most p_limit of the oldest notes
-- created before p_before into spn_notes_archive and deletes them from spn_notes, in one
-- transaction of its own, and only when it moved some returns one row, `retired` (how many).
-- A call that did not commit (its node was killed) changed nothing, and a call run again finds
-- the notes it moved gone, so a sweep, however often it is interrupted and resumed, archives
-- every old note exactly once. Two sweeps at once cannot take the same note: each locks its
-- batch, and the other skips the notes moved meanwhile. Every step takes the oldest notes, so
-- p_step and p_steps are not used.
--
-- The notes' journal entries (beds_journal) are left as they are; their versions move with
-- them.

CREATE TABLE IF NOT EXISTS spn_notes_archive (
    id          BIGINT        NOT NULL,
    author      VARCHAR(64)   NOT NULL,
    body        VARCHAR(2000) NOT NULL,
    version     INT UNSIGNED  NOT NULL,
    created_at  DATETIME(6)   NOT NULL,
    updated_at  DATETIME(6)   NULL DEFAULT NULL,
    archived_at DATETIME(6)   NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The sweep reads the oldest notes first.
CREATE INDEX IF NOT EXISTS spn_notes_created ON spn_notes (created_at, id);

DELIMITER $$

CREATE OR REPLACE PROCEDURE spn_retire(
    IN p_before DATETIME(6),
    IN p_limit INT,
    IN p_step INT,
    IN p_steps INT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_retired INT DEFAULT 0;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    CREATE OR REPLACE TEMPORARY TABLE spn_retiring (id BIGINT NOT NULL PRIMARY KEY)
        ENGINE = MEMORY;
    START TRANSACTION;
    -- The batch, locked: a sweep running at the same time waits, then skips what moved here.
    INSERT INTO spn_retiring (id)
        SELECT id FROM spn_notes
         WHERE created_at < p_before
         ORDER BY created_at, id
         LIMIT p_limit
           FOR UPDATE;
    INSERT INTO spn_notes_archive (id, author, body, version, created_at, updated_at)
        SELECT n.id, n.author, n.body, n.version, n.created_at, n.updated_at
          FROM spn_notes AS n JOIN spn_retiring AS r ON r.id = n.id;
    DELETE n FROM spn_notes AS n JOIN spn_retiring AS r ON r.id = n.id;
    SET v_retired = ROW_COUNT();
    COMMIT;
    DROP TEMPORARY TABLE spn_retiring;
    IF v_retired > 0 THEN
        SELECT v_retired AS retired;
    END IF;
END$$

DELIMITER ;
