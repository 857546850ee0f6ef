-- The record of schema migrations applied to this database (beds-rel's own object; applied by
-- `beds schema apply` and by the migration ticket before any template package's file).
-- Re-appliable.
--
-- One row per template package and migration version (the number prefix of its file,
-- schema/rel/NNN_name.sql): the file's name, the SHA-256 (hex) of its text, when (UTC) and by
-- whom it was applied. Written only through the DBA's migration connection; nodes read it
-- through beds_schema_migrations_v at start-up (`beds check`: every package's required version
-- is recorded).

CREATE TABLE IF NOT EXISTS beds_schema_migrations (
    package     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    version     INT UNSIGNED NOT NULL,
    connection  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    file        VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    sha256      CHAR(64)     CHARACTER SET ascii NOT NULL,
    applied_at  DATETIME(6)  NOT NULL,
    applied_by  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (package, version)
) ENGINE = InnoDB;

-- What nodes read (every column): their accounts get SELECT on the view, never the table.
CREATE OR REPLACE VIEW beds_schema_migrations_v AS
    SELECT package, version, connection, file, sha256, applied_at, applied_by
      FROM beds_schema_migrations;
