-- API tokens for CI pipelines and scripts: scoped, expiring, stored hashed.

-- +goose Up
CREATE TABLE api_tokens (
	id          text COLLATE "C" NOT NULL PRIMARY KEY,
	hash        bytea NOT NULL UNIQUE,   -- SHA-256 of the token; the token itself is never stored
	role        text NOT NULL,
	models      text NOT NULL DEFAULT '', -- comma-separated; empty means every model
	description text NOT NULL DEFAULT '',
	created     timestamptz NOT NULL,
	expires     timestamptz NOT NULL,
	revoked     timestamptz              -- NULL while valid
);

-- +goose Down
DROP TABLE api_tokens;
