-- CALGON tickets of the BEDS REL store (beds-rel's own objects; applied by `beds schema apply`
-- before the template packages' files). Re-appliable. Needs MariaDB 10.6 or later
-- (SELECT ... FOR UPDATE SKIP LOCKED, JSON_TABLE).
--
-- A node whose calgon.store is "rel" keeps its tickets here (docs/calgon.md) and calls only the
-- beds_ticket_* procedures, each one atomic store change (beds_rel/tickets.py):
--   beds_ticket_record     a submit's new ticket, or the principal's ticket with the same key
--   beds_ticket_read       one ticket
--   beds_ticket_claim      the oldest waiting ticket of a lane, taken under a lease (SKIP LOCKED)
--   beds_ticket_renew      the lease holder extends (or, to now, gives back) its lease
--   beds_ticket_save_step  a step's records and steps_done + 1, by the lease holder only
--   beds_ticket_finish     succeeded / failed / cancelled
--   beds_ticket_cancel     a queued ticket is cancelled, a running one asked to stop
--   beds_ticket_results    a page of the result, in (step, idx) order
--   beds_ticket_purge      expired tickets and their results
-- Ticket calls are never part of another transaction: a procedure that changes more than one
-- row (or reads what it changed) runs its own START TRANSACTION ... COMMIT, and rolls back when
-- a statement fails. Times are DATETIME(6) in UTC, passed in by the adapter (it converts the
-- Unix seconds of beds.calgon.tickets), so the session's time zone plays no part.
-- Every ticket is on a lane (beds.calgon.lanes): 'default', or 'warehouse' for the retention
-- sweeps; a claim takes only tickets of the claiming worker's lane.

CREATE TABLE IF NOT EXISTS beds_tickets (
    ticket_id        CHAR(36)     CHARACTER SET ascii NOT NULL,
    template         VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    operation        VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    params           LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                                  CHECK (JSON_VALID(params)),
    state            VARCHAR(10)  CHARACTER SET ascii NOT NULL DEFAULT 'queued'
                                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                                   'cancelled')),
    principal        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    -- The principal as the key's scope: '' for anonymous, '=' + id otherwise, so that an
    -- anonymous key is unique too (a NULL in a UNIQUE key never collides).
    principal_scope  VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                                  AS (COALESCE(CONCAT('=', principal), '')) STORED,
    idempotency_key  VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    fingerprint      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    event_id         VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    depth            INT          NOT NULL DEFAULT 0,
    steps            INT          NOT NULL,
    lane             VARCHAR(32)  CHARACTER SET ascii NOT NULL DEFAULT 'default',
    steps_done       INT          NOT NULL DEFAULT 0,
    attempts         INT          NOT NULL DEFAULT 0,
    cancel_requested TINYINT(1)   NOT NULL DEFAULT 0,
    lease_owner      VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    lease_until      DATETIME(6)  NULL,
    created_at       DATETIME(6)  NOT NULL,
    started_at       DATETIME(6)  NULL,
    finished_at      DATETIME(6)  NULL,
    expires_at       DATETIME(6)  NULL,
    error            LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL
                                  CHECK (error IS NULL OR JSON_VALID(error)),
    PRIMARY KEY (ticket_id),
    UNIQUE KEY beds_tickets_key (principal_scope, idempotency_key),
    -- Claims, per lane: queued tickets (lease_until NULL) oldest first, running ones by lease.
    KEY beds_tickets_lane_claim (lane, state, lease_until, created_at),
    KEY beds_tickets_expires (expires_at)
) ENGINE = InnoDB;

-- A table made before lanes existed gets the column (its tickets are all 'default') and the
-- claim index that leads with it; the old claim index goes. A no-op on a table made above.
ALTER TABLE beds_tickets
    ADD COLUMN IF NOT EXISTS lane VARCHAR(32) CHARACTER SET ascii NOT NULL DEFAULT 'default'
        AFTER steps,
    DROP INDEX IF EXISTS beds_tickets_claim,
    ADD INDEX IF NOT EXISTS beds_tickets_lane_claim (lane, state, lease_until, created_at);

-- A step's records, one row each: a ticket's result is its rows in (step, idx) order.
CREATE TABLE IF NOT EXISTS beds_ticket_results (
    ticket_id CHAR(36) CHARACTER SET ascii NOT NULL,
    step      INT      NOT NULL,
    idx       INT      NOT NULL,
    record    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                       CHECK (JSON_VALID(record)),
    PRIMARY KEY (ticket_id, step, idx)
) ENGINE = InnoDB;

-- What the procedures answer for a ticket: every column but the key's scope.
CREATE OR REPLACE VIEW beds_tickets_v AS
    SELECT ticket_id, template, operation, params, state, principal, idempotency_key,
           fingerprint, event_id, depth, steps, lane, steps_done, attempts, cancel_requested,
           lease_owner, lease_until, created_at, started_at, finished_at, expires_at, error
      FROM beds_tickets;

DELIMITER $$

-- Record a submit's ticket (queued). With a key the principal used before, record nothing and
-- answer the ticket that holds it. One row: created (1: recorded now) and the ticket's columns.
DROP PROCEDURE IF EXISTS beds_ticket_record$$
CREATE PROCEDURE beds_ticket_record(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_template VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_operation VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_params LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_principal VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_idempotency_key VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_fingerprint VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_depth INT,
    IN p_steps INT,
    IN p_lane VARCHAR(32) CHARACTER SET ascii,
    IN p_created_at DATETIME(6)
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_duplicate INT DEFAULT 0;
    DECLARE v_id CHAR(36) CHARACTER SET ascii DEFAULT p_ticket_id;
    BEGIN
        -- Only the insert's duplicate is caught (not the SIGNAL below).
        DECLARE CONTINUE HANDLER FOR 1062 SET v_duplicate = 1;
        -- Autocommitted: a concurrent submit with the same key waits on it, then finds it.
        INSERT INTO beds_tickets (ticket_id, template, operation, params, principal,
                                  idempotency_key, fingerprint, event_id, depth, steps, lane,
                                  created_at)
            VALUES (p_ticket_id, p_template, p_operation, p_params, p_principal,
                    p_idempotency_key, p_fingerprint, p_event_id, p_depth, p_steps, p_lane,
                    p_created_at);
    END;
    IF v_duplicate THEN
        SET v_id = NULL;
        IF p_idempotency_key IS NOT NULL THEN
            SELECT ticket_id INTO v_id FROM beds_tickets
             WHERE principal_scope = COALESCE(CONCAT('=', p_principal), '')
               AND idempotency_key = p_idempotency_key;
        END IF;
        IF v_id IS NULL THEN
            SIGNAL SQLSTATE '23000'
                SET MESSAGE_TEXT = 'a ticket with this ticket_id exists', MYSQL_ERRNO = 1062;
        END IF;
    END IF;
    SELECT 1 - v_duplicate AS created, t.* FROM beds_tickets_v t WHERE t.ticket_id = v_id;
END$$

-- One ticket (no row: there is none).
DROP PROCEDURE IF EXISTS beds_ticket_read$$
CREATE PROCEDURE beds_ticket_read(IN p_ticket_id CHAR(36) CHARACTER SET ascii)
READS SQL DATA
BEGIN
    SELECT * FROM beds_tickets_v WHERE ticket_id = p_ticket_id;
END$$

-- Take the oldest waiting ticket of lane p_lane for p_owner until p_lease_until, as one more
-- attempt; answer it (no row: none waits). Waiting: queued, or running with a lease that lapsed
-- before p_now. Another lane's ticket is never taken (beds_tickets_lane_claim leads with lane).
-- SKIP LOCKED: concurrent claims take different tickets instead of waiting for each other. The
-- queued look-up reads its index in order and stops at the first row it can lock, so a claim
-- holds one queued ticket (and the few lapsed ones) only until it commits.
DROP PROCEDURE IF EXISTS beds_ticket_claim$$
CREATE PROCEDURE beds_ticket_claim(
    IN p_owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_now DATETIME(6),
    IN p_lease_until DATETIME(6),
    IN p_lane VARCHAR(32) CHARACTER SET ascii
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_lapsed CHAR(36) CHARACTER SET ascii DEFAULT NULL;
    DECLARE v_lapsed_at DATETIME(6) DEFAULT NULL;
    DECLARE v_queued CHAR(36) CHARACTER SET ascii DEFAULT NULL;
    DECLARE v_queued_at DATETIME(6) DEFAULT NULL;
    DECLARE v_id CHAR(36) CHARACTER SET ascii DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;  -- no candidate: the variable stays NULL
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- No gap locks: a claim never holds up a submit's insert. (With a binary log, this needs
    -- binlog_format MIXED, MariaDB's default, or ROW.)
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT ticket_id, created_at INTO v_lapsed, v_lapsed_at FROM beds_tickets
     WHERE lane = p_lane AND state = 'running' AND lease_until < p_now
     ORDER BY created_at, ticket_id LIMIT 1 FOR UPDATE SKIP LOCKED;
    -- A queued ticket has no lease (nothing sets one before its first claim).
    SELECT ticket_id, created_at INTO v_queued, v_queued_at FROM beds_tickets
     WHERE lane = p_lane AND state = 'queued' AND lease_until IS NULL
     ORDER BY created_at, ticket_id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_lapsed IS NOT NULL
       AND (v_queued IS NULL OR (v_lapsed_at, v_lapsed) < (v_queued_at, v_queued)) THEN
        SET v_id = v_lapsed;
    ELSE
        SET v_id = v_queued;
    END IF;
    UPDATE beds_tickets
       SET state = 'running', lease_owner = p_owner, lease_until = p_lease_until,
           attempts = attempts + 1, started_at = COALESCE(started_at, p_now)
     WHERE ticket_id = v_id;
    COMMIT;
    SELECT * FROM beds_tickets_v WHERE ticket_id = v_id;
END$$

-- Extend p_owner's lease to p_lease_until; answer the ticket (no row: p_owner does not hold
-- it). A lease renewed to now gives the ticket back: the next claim takes it.
DROP PROCEDURE IF EXISTS beds_ticket_renew$$
CREATE PROCEDURE beds_ticket_renew(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_lease_until DATETIME(6)
)
MODIFIES SQL DATA
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    UPDATE beds_tickets SET lease_until = p_lease_until
     WHERE ticket_id = p_ticket_id AND state = 'running' AND lease_owner = p_owner;
    SELECT * FROM beds_tickets_v
     WHERE ticket_id = p_ticket_id AND state = 'running' AND lease_owner = p_owner;
    COMMIT;
END$$

-- Keep step p_step's records (p_records: a JSON array, one element per record) and count the
-- step done, when p_owner holds the lease and p_step is the next step not done. One row:
-- saved (0: nothing was kept; a step saved already is never saved twice).
DROP PROCEDURE IF EXISTS beds_ticket_save_step$$
CREATE PROCEDURE beds_ticket_save_step(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_step INT,
    IN p_records LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
)
MODIFIES SQL DATA
BEGIN
    DECLARE v_done INT DEFAULT NULL;
    DECLARE v_saved INT DEFAULT 0;
    DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;  -- not held: v_done stays NULL
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    SELECT steps_done INTO v_done FROM beds_tickets
     WHERE ticket_id = p_ticket_id AND state = 'running' AND lease_owner = p_owner
       FOR UPDATE;
    IF v_done = p_step THEN
        INSERT INTO beds_ticket_results (ticket_id, step, idx, record)
            SELECT p_ticket_id, p_step, r.ordinal - 1, r.record
              FROM JSON_TABLE(p_records, '$[*]'
                       COLUMNS (ordinal FOR ORDINALITY, record JSON PATH '$')) AS r;
        UPDATE beds_tickets SET steps_done = p_step + 1 WHERE ticket_id = p_ticket_id;
        SET v_saved = 1;
    END IF;
    COMMIT;
    SELECT v_saved AS saved;
END$$

-- Put an unfinished ticket in a final state (with p_owner: only if it holds the lease). One
-- row: finished (0: not changed; it was finished already, or is another node's).
DROP PROCEDURE IF EXISTS beds_ticket_finish$$
CREATE PROCEDURE beds_ticket_finish(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_state VARCHAR(10) CHARACTER SET ascii,
    IN p_error LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_now DATETIME(6),
    IN p_expires_at DATETIME(6)
)
MODIFIES SQL DATA
BEGIN
    UPDATE beds_tickets
       SET state = p_state, error = p_error, finished_at = p_now, expires_at = p_expires_at,
           lease_owner = '', lease_until = NULL
     WHERE ticket_id = p_ticket_id AND state IN ('queued', 'running')
       AND (p_owner IS NULL OR (state = 'running' AND lease_owner = p_owner));
    SELECT ROW_COUNT() AS finished;
END$$

-- Cancel a ticket: a queued one at once, a running one is asked to stop (its worker stops it
-- after the current step); a finished one is left as it is. Answer it after the change (no
-- row: there is none).
DROP PROCEDURE IF EXISTS beds_ticket_cancel$$
CREATE PROCEDURE beds_ticket_cancel(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_now DATETIME(6),
    IN p_expires_at DATETIME(6)
)
MODIFIES SQL DATA
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    UPDATE beds_tickets
       SET state = 'cancelled', finished_at = p_now, expires_at = p_expires_at
     WHERE ticket_id = p_ticket_id AND state = 'queued';
    UPDATE beds_tickets SET cancel_requested = 1
     WHERE ticket_id = p_ticket_id AND state = 'running';
    SELECT * FROM beds_tickets_v WHERE ticket_id = p_ticket_id;
    COMMIT;
END$$

-- Up to p_limit result records in (step, idx) order, strictly after (p_after_step,
-- p_after_idx); (-1, -1) for the first page.
DROP PROCEDURE IF EXISTS beds_ticket_results$$
CREATE PROCEDURE beds_ticket_results(
    IN p_ticket_id CHAR(36) CHARACTER SET ascii,
    IN p_after_step INT,
    IN p_after_idx INT,
    IN p_limit INT
)
READS SQL DATA
BEGIN
    SELECT step, idx, record FROM beds_ticket_results
     WHERE ticket_id = p_ticket_id
       AND (step > p_after_step OR (step = p_after_step AND idx > p_after_idx))
     ORDER BY step, idx
     LIMIT p_limit;
END$$

-- Forget up to p_limit tickets that expired before p_now, with their results. One row: purged.
-- Ticket by ticket, each statement autocommitted: a finished ticket gets no more results, so a
-- purge stopped half-way leaves an expired ticket (already answered as expired) for the next.
DROP PROCEDURE IF EXISTS beds_ticket_purge$$
CREATE PROCEDURE beds_ticket_purge(IN p_now DATETIME(6), IN p_limit INT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_end INT DEFAULT 0;
    DECLARE v_id CHAR(36) CHARACTER SET ascii;
    DECLARE v_purged INT DEFAULT 0;
    DECLARE expired CURSOR FOR
        SELECT ticket_id FROM beds_tickets WHERE expires_at < p_now
         ORDER BY expires_at LIMIT p_limit;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_end = 1;
    OPEN expired;
    each_ticket: LOOP
        FETCH expired INTO v_id;
        IF v_end THEN
            LEAVE each_ticket;
        END IF;
        DELETE FROM beds_ticket_results WHERE ticket_id = v_id;
        DELETE FROM beds_tickets WHERE ticket_id = v_id AND expires_at < p_now;
        SET v_purged = v_purged + ROW_COUNT();
    END LOOP;
    CLOSE expired;
    SELECT v_purged AS purged;
END$$

DELIMITER ;
