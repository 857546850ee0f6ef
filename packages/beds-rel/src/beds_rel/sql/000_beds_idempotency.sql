-- Idempotency keys for the BEDS REL store (beds-rel's own objects; applied by `beds schema apply`
-- before the template packages' files). Re-appliable.
--
-- The adapter runs an idempotent write as one transaction on one connection, in three calls:
--   CALL beds_idempotency_claim(key, fingerprint, ttl_ms)  -- opens the transaction; claimed = 1:
--   CALL <the template's write procedure>(...)              -- run the write
--   CALL beds_idempotency_complete(key, result_json)       -- records the result and commits
-- so the key, the write and its result commit together or not at all (on an error the adapter
-- rolls back; a dropped connection rolls back by itself). A concurrent repeat waits on the key's
-- row lock, then reads the committed result (claimed = 0; the claim call has ended its own
-- transaction). Write procedures must therefore not COMMIT themselves.

CREATE TABLE IF NOT EXISTS beds_idempotency (
    idem_key    VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    fingerprint CHAR(64) CHARACTER SET ascii NOT NULL,
    result      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_at  DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    expires_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (idem_key),
    KEY beds_idempotency_expires (expires_at)
) ENGINE = InnoDB;

DELIMITER $$

-- Claim a key, or report the request that holds it. Returns one row: claimed (1 when this call
-- owns the key now), the holder's fingerprint and its result (NULL until completed).
-- Plain INSERT first: a new key takes no gap locks, so claims of different keys never deadlock.
CREATE OR REPLACE PROCEDURE beds_idempotency_claim(
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_fingerprint CHAR(64) CHARACTER SET ascii,
    IN p_ttl_ms BIGINT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_claimed INT DEFAULT 0;
    DECLARE v_expired INT DEFAULT 0;
    START TRANSACTION;
    INSERT IGNORE INTO beds_idempotency (idem_key, fingerprint, expires_at)
        VALUES (p_key, p_fingerprint, UTC_TIMESTAMP(6) + INTERVAL p_ttl_ms * 1000 MICROSECOND);
    SET v_claimed = ROW_COUNT();
    IF v_claimed = 0 THEN
        SELECT expires_at <= UTC_TIMESTAMP(6) INTO v_expired
          FROM beds_idempotency WHERE idem_key = p_key;
        IF v_expired THEN
            UPDATE beds_idempotency
               SET fingerprint = p_fingerprint, result = NULL, created_at = UTC_TIMESTAMP(6),
                   expires_at = UTC_TIMESTAMP(6) + INTERVAL p_ttl_ms * 1000 MICROSECOND
             WHERE idem_key = p_key AND expires_at <= UTC_TIMESTAMP(6);
            SET v_claimed = ROW_COUNT();
        END IF;
    END IF;
    SELECT v_claimed AS claimed, fingerprint, result FROM beds_idempotency WHERE idem_key = p_key;
    IF v_claimed = 0 THEN
        ROLLBACK;  -- nothing to write: answer from the holder's row
    END IF;
END$$

-- Record the result of the write that claimed the key, and commit the claim, write and result.
CREATE OR REPLACE PROCEDURE beds_idempotency_complete(
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_result LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
)
MODIFIES SQL DATA
BEGIN
    UPDATE beds_idempotency SET result = p_result WHERE idem_key = p_key;
    COMMIT;
END$$

-- Forget up to p_limit expired keys; returns one row with a `purged` count.
CREATE OR REPLACE PROCEDURE beds_idempotency_purge(IN p_limit INT)
MODIFIES SQL DATA
BEGIN
    DELETE FROM beds_idempotency WHERE expires_at <= UTC_TIMESTAMP(6)
     ORDER BY expires_at LIMIT p_limit;
    SELECT ROW_COUNT() AS purged;
END$$

DELIMITER ;
