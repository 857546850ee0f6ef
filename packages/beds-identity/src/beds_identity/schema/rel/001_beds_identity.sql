-- Users (template beds_user, TLA usr) and sessions (template beds_session, TLA ses) for BEDS.
--
-- The DBA owns this file. BEDS calls only the objects below, by name, with bound parameters
-- (packages/beds-rel/README.md lists the conventions). It is re-appliable.
--
-- Why MariaDB (REL) and not MongoDB: a handle must be unique at once, a deactivation and the
-- revocation of its sessions must hold together, and the login reads one row by a unique key;
-- all three are what a relational store with transactions does best. Passwords are stored only
-- as argon2id hashes, made by beds-identity before the call; no view a request can name has the
-- hash column (usr_credentials_v is internal: only the login handler reads it).

CREATE TABLE IF NOT EXISTS usr_users (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    handle        VARCHAR(64)  NOT NULL,
    display_name  VARCHAR(100) NULL DEFAULT NULL,
    email         VARCHAR(254) NULL DEFAULT NULL,
    roles         VARCHAR(200) NOT NULL DEFAULT 'member',
    password_hash VARCHAR(255) NOT NULL,
    active        BOOLEAN      NOT NULL DEFAULT TRUE,
    created_at    DATETIME(6)  NOT NULL DEFAULT UTC_TIMESTAMP(6),
    updated_at    DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY usr_users_handle_uq (handle)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS ses_sessions (
    session    CHAR(32)    NOT NULL,
    user_id    BIGINT      NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    expires_at DATETIME(6) NOT NULL,
    revoked_at DATETIME(6) NULL DEFAULT NULL,
    PRIMARY KEY (session),
    KEY ses_sessions_user (user_id, created_at),
    CONSTRAINT ses_sessions_user_fk FOREIGN KEY (user_id) REFERENCES usr_users (id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = ascii COLLATE = ascii_bin;

-- What anyone may read of a user: never the hash.
CREATE OR REPLACE VIEW usr_public_v AS
    SELECT id, handle, display_name, email, roles, active, created_at, updated_at FROM usr_users;

-- Internal (the login): the hash, to verify a password.
CREATE OR REPLACE VIEW usr_credentials_v AS
    SELECT id, handle, roles, active, password_hash FROM usr_users;

CREATE OR REPLACE VIEW ses_sessions_v AS
    SELECT session, user_id, created_at, expires_at, revoked_at FROM ses_sessions;

DELIMITER $$

CREATE OR REPLACE PROCEDURE usr_create(
    IN p_handle VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_display_name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
)
MODIFIES SQL DATA
BEGIN
    INSERT INTO usr_users (handle, password_hash, display_name, email)
    VALUES (p_handle, p_password_hash, p_display_name, p_email);
    SELECT id, handle, created_at FROM usr_users WHERE id = LAST_INSERT_ID();
END$$

-- A NULL argument keeps the current value. Only active users change; an empty result means
-- no active user has that id.
CREATE OR REPLACE PROCEDURE usr_update(
    IN p_id BIGINT,
    IN p_display_name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
    IN p_password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_roles VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin
)
MODIFIES SQL DATA
BEGIN
    UPDATE usr_users
       SET display_name = COALESCE(p_display_name, display_name),
           email = COALESCE(p_email, email),
           password_hash = COALESCE(p_password_hash, password_hash),
           roles = COALESCE(p_roles, roles),
           updated_at = UTC_TIMESTAMP(6)
     WHERE id = p_id AND active;
    SELECT id, updated_at FROM usr_users WHERE id = p_id AND active;
END$$

-- Deactivates (the row stays: posts and audit records name it) and ends its sessions in one
-- statement, so both hold or neither (no transaction here: the adapter may hold one open).
CREATE OR REPLACE PROCEDURE usr_deactivate(IN p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_count INT DEFAULT 0;
    SELECT COUNT(*) INTO v_count FROM usr_users WHERE id = p_id AND active;
    UPDATE usr_users u
      LEFT JOIN ses_sessions s ON s.user_id = u.id AND s.revoked_at IS NULL
       SET u.active = FALSE, u.updated_at = UTC_TIMESTAMP(6), s.revoked_at = UTC_TIMESTAMP(6)
     WHERE u.id = p_id AND u.active;
    SELECT v_count AS deleted;
END$$

CREATE OR REPLACE PROCEDURE usr_everyone(IN p_limit INT UNSIGNED)
READS SQL DATA
BEGIN
    SELECT id, handle, display_name, email, roles, active, created_at, updated_at
      FROM usr_users ORDER BY id LIMIT p_limit;
END$$

CREATE OR REPLACE PROCEDURE ses_create(
    IN p_session CHAR(32) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_user_id BIGINT,
    IN p_expires_at DATETIME(6)
)
MODIFIES SQL DATA
BEGIN
    INSERT INTO ses_sessions (session, user_id, expires_at)
    SELECT p_session, p_user_id, p_expires_at FROM usr_users WHERE id = p_user_id AND active;
    SELECT session, created_at FROM ses_sessions WHERE session = p_session;
END$$

-- Refresh: a session still valid answers its row; a revoked or expired one answers nothing.
CREATE OR REPLACE PROCEDURE ses_touch(
    IN p_session CHAR(32) CHARACTER SET ascii COLLATE ascii_bin
)
READS SQL DATA
BEGIN
    SELECT s.session, s.expires_at
      FROM ses_sessions s JOIN usr_users u ON u.id = s.user_id
     WHERE s.session = p_session AND s.revoked_at IS NULL AND s.expires_at > UTC_TIMESTAMP(6)
       AND u.active;
END$$

CREATE OR REPLACE PROCEDURE ses_revoke(
    IN p_session CHAR(32) CHARACTER SET ascii COLLATE ascii_bin
)
MODIFIES SQL DATA
BEGIN
    UPDATE ses_sessions SET revoked_at = UTC_TIMESTAMP(6)
     WHERE session = p_session AND revoked_at IS NULL;
    SELECT ROW_COUNT() AS deleted;
END$$

CREATE OR REPLACE PROCEDURE ses_by_user(IN p_user_id BIGINT, IN p_limit INT UNSIGNED)
READS SQL DATA
BEGIN
    SELECT session, user_id, created_at, expires_at, revoked_at
      FROM ses_sessions
     WHERE user_id = p_user_id AND revoked_at IS NULL AND expires_at > UTC_TIMESTAMP(6)
     ORDER BY created_at DESC
     LIMIT p_limit;
END$$

DELIMITER ;
