-- The audit log: every change made through the API, hash-chained (see
-- package server/audit for the hash), and its head, the latest entry's seq
-- and hash, kept apart so that removing the last entries shows. Appending
-- replicas queue on the head row (SELECT … FOR UPDATE), so the chain never
-- forks.

-- +goose Up
CREATE TABLE audit_log (
	seq        bigint NOT NULL PRIMARY KEY, -- 1, 2, 3, … without gaps
	time       timestamptz NOT NULL,
	actor      text NOT NULL,
	actor_kind text NOT NULL,
	tenant     text COLLATE "C" NOT NULL,   -- '' for platform-wide changes
	action     text NOT NULL,
	target     text NOT NULL,
	before     text,                        -- canonical JSON, kept byte for byte (not jsonb); NULL when none
	after      text,
	remote     text NOT NULL,
	status     integer NOT NULL,
	prev_hash  bytea NOT NULL,
	hash       bytea NOT NULL
);

CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);

CREATE TABLE audit_head (
	id   integer NOT NULL PRIMARY KEY CHECK (id = 1),
	seq  bigint NOT NULL, -- 0 while the log is empty
	hash bytea NOT NULL   -- empty while the log is empty (the genesis hash)
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x'::bytea);

-- +goose Down
DROP TABLE audit_head;
DROP TABLE audit_log;
