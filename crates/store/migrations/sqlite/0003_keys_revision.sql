-- API keys get a revision too: running nodes poll one row instead of scanning api_keys.
INSERT INTO config_revisions (area, revision) VALUES ('keys', 1);
