-- A counter per configuration area, bumped by every write to it, so running nodes notice
-- changes made by another process (the CLI, another node) with one cheap read.
CREATE TABLE config_revisions (
    area     TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
INSERT INTO config_revisions (area, revision) VALUES ('exchanges', 1);
