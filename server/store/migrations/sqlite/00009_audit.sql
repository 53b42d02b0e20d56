-- The audit log: every change made through the API, hash-chained (see
-- package server/audit for the hash), and its head, the latest entry's seq
-- and hash, kept apart so that removing the last entries shows.

-- +goose Up
CREATE TABLE audit_log (
	seq        INTEGER NOT NULL PRIMARY KEY, -- 1, 2, 3, … without gaps
	time       INTEGER NOT NULL,             -- Unix microseconds
	actor      TEXT    NOT NULL,
	actor_kind TEXT    NOT NULL,
	tenant     TEXT    NOT NULL,             -- '' for platform-wide changes
	action     TEXT    NOT NULL,
	target     TEXT    NOT NULL,
	before     TEXT,                         -- canonical JSON; NULL when none
	after      TEXT,
	remote     TEXT    NOT NULL,
	status     INTEGER NOT NULL,
	prev_hash  BLOB    NOT NULL,
	hash       BLOB    NOT NULL
) STRICT;

CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);

CREATE TABLE audit_head (
	id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	seq  INTEGER NOT NULL, -- 0 while the log is empty
	hash BLOB    NOT NULL  -- empty while the log is empty (the genesis hash)
) STRICT;

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, X'');

-- +goose Down
DROP TABLE audit_head;
DROP TABLE audit_log;
