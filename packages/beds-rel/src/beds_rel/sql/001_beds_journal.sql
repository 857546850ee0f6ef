-- Journals of the BEDS REL store (beds-rel's own objects; applied by `beds schema apply` before
-- the template packages' files). Re-appliable.
--
-- A template with `journal = true` appends one entry per write, in the write's transaction:
--   (the key query, read before)   -- the record before the write
--   CALL <the template's write procedure>(...)
--   (the key query, read after)    -- the record after it
--   CALL beds_journal_append(...)  -- the entry
-- so an entry exists exactly when its write committed. With an idempotency key, the same
-- transaction holds the key (000_beds_idempotency.sql). The adapter reads entries back through
-- beds_journal_v (the `history` query), ordered by (at, event_id).
--
-- key_hash is the SHA-256 (hex) of the record's key as canonical JSON (sorted names, wire
-- values), computed by the adapter: one index serves any key shape. Entries are never changed.

CREATE TABLE IF NOT EXISTS beds_journal (
    seq         BIGINT       NOT NULL AUTO_INCREMENT,
    template    VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_id    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    key_hash    CHAR(64)     CHARACTER SET ascii NOT NULL,
    record_key  LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    operation   VARCHAR(8)   CHARACTER SET ascii NOT NULL,
    before_json LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    after_json  LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    principal   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    origin      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    at          DATETIME(6)  NOT NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY beds_journal_event (template, event_id),
    KEY beds_journal_record (template, key_hash, at, event_id)
) ENGINE = InnoDB;

-- What the adapter reads (a `history` page): every column but seq.
CREATE OR REPLACE VIEW beds_journal_v AS
    SELECT template, event_id, key_hash, record_key, operation, before_json, after_json,
           principal, origin, at
      FROM beds_journal;

DELIMITER $$

-- Append one entry; a second entry for the same (template, event_id) is dropped without error:
-- a write run again for the same event (a redelivery) journals once.
CREATE OR REPLACE PROCEDURE beds_journal_append(
    IN p_template VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key_hash CHAR(64) CHARACTER SET ascii,
    IN p_record_key LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_operation VARCHAR(8) CHARACTER SET ascii,
    IN p_before LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_after LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_principal VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_origin VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
)
MODIFIES SQL DATA
BEGIN
    INSERT INTO beds_journal (template, event_id, key_hash, record_key, operation, before_json,
                              after_json, principal, origin, at)
        VALUES (p_template, p_event_id, p_key_hash, p_record_key, p_operation, p_before,
                p_after, p_principal, COALESCE(p_origin, ''), UTC_TIMESTAMP(6))
        ON DUPLICATE KEY UPDATE seq = seq;
    SELECT ROW_COUNT() AS appended;
END$$

DELIMITER ;
