-- API tokens for CI pipelines and scripts: scoped, expiring, stored hashed.

-- +goose Up
CREATE TABLE api_tokens (
	id          TEXT    NOT NULL PRIMARY KEY,
	hash        BLOB    NOT NULL UNIQUE,   -- SHA-256 of the token; the token itself is never stored
	role        TEXT    NOT NULL,
	models      TEXT    NOT NULL DEFAULT '', -- comma-separated; empty means every model
	description TEXT    NOT NULL DEFAULT '',
	created     INTEGER NOT NULL,
	expires     INTEGER NOT NULL,
	revoked     INTEGER                    -- NULL while valid
) STRICT;

-- +goose Down
DROP TABLE api_tokens;
