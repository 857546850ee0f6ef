-- SPEW statistics (template spew_stats, TLA sps) for the BEDS REL store (MariaDB/MySQL).
--
-- The DBA owns this file; it is re-appliable (CREATE OR REPLACE). It reads spew_post's table.
--
-- sps_daily is a long operation (docs/calgon.md): BEDS calls it once per step with the
-- operation's params in the template's order, then p_step (0 … p_steps - 1) and p_steps. Each
-- step counts the authors whose CRC32 modulo p_steps is p_step, so the steps together count
-- every author once, and a step run twice (a node died after it) gives the same rows.

CREATE OR REPLACE VIEW sps_daily_v AS
    SELECT author, DATE_FORMAT(created_at, '%Y-%m-%d') AS day, COUNT(*) AS posts
      FROM spp_posts
     GROUP BY author, DATE_FORMAT(created_at, '%Y-%m-%d');

DELIMITER $$

CREATE OR REPLACE PROCEDURE sps_daily(
    IN p_days INT,
    IN p_author VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_step INT,
    IN p_steps INT
)
READS SQL DATA
BEGIN
    SELECT author, DATE_FORMAT(created_at, '%Y-%m-%d') AS day, COUNT(*) AS posts
      FROM spp_posts
     WHERE created_at >= UTC_DATE() - INTERVAL (p_days - 1) DAY
       AND (p_author IS NULL OR author = p_author)
       AND MOD(CRC32(author), p_steps) = p_step
     GROUP BY author, DATE_FORMAT(created_at, '%Y-%m-%d')
     ORDER BY author, day;
END$$

DELIMITER ;
