-- Operators: their password hashes, second factors, tenant memberships and
-- login sessions. Secrets handed to people (session tokens, recovery codes)
-- are stored only as SHA-256 hashes.

-- +goose Up
CREATE TABLE users (
	id            TEXT    NOT NULL PRIMARY KEY,
	name          TEXT    NOT NULL UNIQUE,
	password_hash TEXT    NOT NULL,           -- argon2id, PHC string with its parameters
	totp_secret   TEXT    NOT NULL DEFAULT '', -- base32; empty until enrolled
	totp_step     INTEGER NOT NULL DEFAULT 0,  -- last accepted TOTP time step, against replay
	platform      INTEGER NOT NULL DEFAULT 0,
	disabled      INTEGER NOT NULL DEFAULT 0,
	created       INTEGER NOT NULL
) STRICT;

CREATE TABLE user_tenants (
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	tenant  TEXT NOT NULL,
	role    TEXT NOT NULL,
	PRIMARY KEY (user_id, tenant)
) STRICT;

CREATE TABLE user_recovery_codes (
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	hash    BLOB NOT NULL, -- SHA-256 of the normalised code
	PRIMARY KEY (user_id, hash)
) STRICT;

CREATE TABLE sessions (
	id      TEXT    NOT NULL PRIMARY KEY,
	hash    BLOB    NOT NULL UNIQUE, -- SHA-256 of the bearer token
	user_id TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	method  TEXT    NOT NULL DEFAULT 'password', -- how the user logged in: password, oidc
	created INTEGER NOT NULL,
	expires INTEGER NOT NULL,
	revoked INTEGER                  -- NULL while valid
) STRICT;

CREATE INDEX sessions_user ON sessions (user_id);

-- Single sign-on accounts linked to users: an identity provider's issuer
-- and subject, never an email address.
CREATE TABLE user_identities (
	issuer  TEXT NOT NULL,
	subject TEXT NOT NULL,
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	PRIMARY KEY (issuer, subject)
) STRICT;

-- +goose Down
DROP TABLE user_identities;
DROP TABLE sessions;
DROP TABLE user_recovery_codes;
DROP TABLE user_tenants;
DROP TABLE users;
