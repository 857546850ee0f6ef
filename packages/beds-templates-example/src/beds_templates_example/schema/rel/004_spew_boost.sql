-- SPEW boosts (template spew_boost, TLA spb) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file. BEDS only calls the objects below by name, with bound parameters (and
-- selects from spb_boosts_v). It is re-appliable (CREATE TABLE IF NOT EXISTS, CREATE OR
-- REPLACE) and runs after 001_spew_post.sql, whose table spb_create reads.
--
-- Values, by the template's field types:
--   * budget (decimal) is DECIMAL(10,2): bound as exact decimal text, read back as "12.50";
--   * targeting (json) is a JSON column: bound as compact JSON text, parsed when read back;
--   * active (bool) is BOOLEAN (TINYINT(1)): read back as true/false.
-- OUT and INOUT parameters (docs/rel.md, "OUT and INOUT parameters, result sets"):
--   * spb_create ends with OUT p_id: BEDS passes a session variable and reads it after the call;
--   * spb_quote's p_budget is INOUT: its value is set before the call and read after it.
-- A refused boost signals SQLSTATE class 23 (BEDS-409). These procedures must not COMMIT.

CREATE TABLE IF NOT EXISTS spb_boosts (
    id         BIGINT        NOT NULL AUTO_INCREMENT,
    owner      VARCHAR(64)   NOT NULL,
    post_id    BIGINT        NOT NULL,
    budget     DECIMAL(10,2) NOT NULL,
    targeting  JSON          NULL,
    active     BOOLEAN       NOT NULL,
    created_at DATETIME(6)   NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY spb_boosts_owner (owner, id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW spb_boosts_v AS
    SELECT id, owner, post_id, budget, targeting, active, created_at FROM spb_boosts;

DELIMITER $$

CREATE OR REPLACE PROCEDURE spb_create(
    IN p_owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_post_id BIGINT,
    IN p_budget DECIMAL(10,2),
    IN p_targeting JSON,
    IN p_active BOOLEAN,
    OUT p_id BIGINT
)
MODIFIES SQL DATA
BEGIN
    IF NOT EXISTS (SELECT 1 FROM spp_posts WHERE id = p_post_id AND author = p_owner) THEN
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'spew_boost: no post of yours has that id';
    END IF;
    INSERT INTO spb_boosts (owner, post_id, budget, targeting, active)
         VALUES (p_owner, p_post_id, p_budget, p_targeting, p_active);
    SET p_id = LAST_INSERT_ID();
END$$

-- A NULL argument keeps the current value (the adapter passes NULL for params not sent).
CREATE OR REPLACE PROCEDURE spb_update(
    IN p_id BIGINT,
    IN p_budget DECIMAL(10,2),
    IN p_targeting JSON,
    IN p_active BOOLEAN
)
MODIFIES SQL DATA
BEGIN
    UPDATE spb_boosts
       SET budget = COALESCE(p_budget, budget), targeting = COALESCE(p_targeting, targeting),
           active = COALESCE(p_active, active)
     WHERE id = p_id;
    SELECT id, budget, active FROM spb_boosts WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE spb_delete(IN p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    DELETE FROM spb_boosts WHERE id = p_id;
    SELECT ROW_COUNT() AS deleted;
END$$

-- p_budget comes in as asked and goes out as what the post can take (at most 500.00, nothing
-- for a post that does not exist); p_reach is the readers that budget reaches (100 a unit).
-- p_limit is the row limit every query procedure takes; a quote has no rows.
CREATE OR REPLACE PROCEDURE spb_quote(
    IN p_post_id BIGINT,
    INOUT p_budget DECIMAL(10,2),
    IN p_limit INT UNSIGNED,
    OUT p_reach BIGINT
)
READS SQL DATA
BEGIN
    IF EXISTS (SELECT 1 FROM spp_posts WHERE id = p_post_id) THEN
        SET p_budget = LEAST(GREATEST(p_budget, 0), 500.00);
    ELSE
        SET p_budget = 0;
    END IF;
    SET p_reach = FLOOR(p_budget * 100);
END$$

DELIMITER ;
