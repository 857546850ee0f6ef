-- Idempotency keys for the BEDS REL store (beds-rel's own objects; applied by `beds schema apply`
-- before the template packages' files). Re-appliable.
--
-- The adapter runs an idempotent write as one transaction on one connection, in two round trips
-- when the write is one call (a journaled write reads and appends in between):
--   CALL beds_idempotency_start(key, fingerprint, ttl_ms);  -- opens the transaction, or SIGNALs
--   CALL <the template's write procedure>(...)              -- (same packet) run the write
--   CALL beds_idempotency_complete(key, result_json)        -- records the result and commits
-- so the key, the write and its result commit together or not at all (on an error the adapter
-- rolls back; a dropped connection rolls back by itself). When another request holds the key,
-- start ends its transaction and SIGNALs SQLSTATE '45410', so MariaDB runs nothing more of the
-- packet; the adapter then reads the holder's row with beds_idempotency_claim (claimed = 0),
-- which a journaled write also uses to open its transaction. A concurrent repeat waits on the
-- key's row lock, then finds the committed result. Write procedures must therefore not COMMIT
-- themselves.

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

-- Take a key for this transaction: opens one, and sets p_claimed to 1 when the key was new or
-- expired (the transaction holds its row), else to 0 (the transaction is still open: the caller
-- ends it). Called by beds_idempotency_claim and beds_idempotency_start, not by the adapter.
-- Plain INSERT first: a new key takes no gap locks, so claims of different keys never deadlock.
CREATE OR REPLACE PROCEDURE beds_idempotency_take(
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_fingerprint CHAR(64) CHARACTER SET ascii,
    IN p_ttl_ms BIGINT,
    OUT p_claimed INT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_expired INT DEFAULT 0;
    START TRANSACTION;
    INSERT IGNORE INTO beds_idempotency (idem_key, fingerprint, expires_at)
        VALUES (p_key, p_fingerprint, UTC_TIMESTAMP(6) + INTERVAL p_ttl_ms * 1000 MICROSECOND);
    SET p_claimed = ROW_COUNT();
    IF p_claimed = 0 THEN
        SELECT expires_at <= UTC_TIMESTAMP(6) INTO v_expired
          FROM beds_idempotency WHERE idem_key = p_key;
        IF v_expired THEN
            UPDATE beds_idempotency
               SET fingerprint = p_fingerprint, result = NULL, created_at = UTC_TIMESTAMP(6),
                   expires_at = UTC_TIMESTAMP(6) + INTERVAL p_ttl_ms * 1000 MICROSECOND
             WHERE idem_key = p_key AND expires_at <= UTC_TIMESTAMP(6);
            SET p_claimed = ROW_COUNT();
        END IF;
    END IF;
END$$

-- Claim a key, or report the request that holds it. Returns one row: claimed (1 when this call
-- owns the key now, its transaction open), the holder's fingerprint and its result (NULL until
-- completed).
CREATE OR REPLACE PROCEDURE beds_idempotency_claim(
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_fingerprint CHAR(64) CHARACTER SET ascii,
    IN p_ttl_ms BIGINT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_claimed INT DEFAULT 0;
    CALL beds_idempotency_take(p_key, p_fingerprint, p_ttl_ms, v_claimed);
    SELECT v_claimed AS claimed, fingerprint, result FROM beds_idempotency WHERE idem_key = p_key;
    IF v_claimed = 0 THEN
        ROLLBACK;  -- nothing to write: answer from the holder's row
    END IF;
END$$

-- Claim a key and return nothing (its transaction open), or, when another request holds it,
-- end the transaction and SIGNAL SQLSTATE '45410': the adapter sends this call and the write
-- in one packet, and the signal stops the packet before the write. No result set, so the
-- write's results are the packet's next ones.
CREATE OR REPLACE PROCEDURE beds_idempotency_start(
    IN p_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_fingerprint CHAR(64) CHARACTER SET ascii,
    IN p_ttl_ms BIGINT
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_claimed INT DEFAULT 0;
    CALL beds_idempotency_take(p_key, p_fingerprint, p_ttl_ms, v_claimed);
    IF v_claimed = 0 THEN
        ROLLBACK;
        SIGNAL SQLSTATE '45410'
            SET MESSAGE_TEXT = 'beds_idempotency: the key is held by another call';
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
