-- Operators: their password hashes, second factors, tenant memberships and
-- login sessions. Secrets handed to people (session tokens, recovery codes)
-- are stored only as SHA-256 hashes.

-- +goose Up
CREATE TABLE users (
	id            text COLLATE "C" NOT NULL PRIMARY KEY,
	name          text COLLATE "C" NOT NULL UNIQUE,
	password_hash text NOT NULL,            -- argon2id, PHC string with its parameters
	totp_secret   text NOT NULL DEFAULT '', -- base32; empty until enrolled
	totp_step     bigint NOT NULL DEFAULT 0, -- last accepted TOTP time step, against replay
	platform      boolean NOT NULL DEFAULT false,
	disabled      boolean NOT NULL DEFAULT false,
	created       timestamptz NOT NULL
);

CREATE TABLE user_tenants (
	user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	tenant  text COLLATE "C" NOT NULL,
	role    text NOT NULL,
	PRIMARY KEY (user_id, tenant)
);

CREATE TABLE user_recovery_codes (
	user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	hash    bytea NOT NULL, -- SHA-256 of the normalised code
	PRIMARY KEY (user_id, hash)
);

CREATE TABLE sessions (
	id      text COLLATE "C" NOT NULL PRIMARY KEY,
	hash    bytea NOT NULL UNIQUE, -- SHA-256 of the bearer token
	user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	method  text NOT NULL DEFAULT 'password', -- how the user logged in: password, oidc
	created timestamptz NOT NULL,
	expires timestamptz NOT NULL,
	revoked timestamptz             -- NULL while valid
);

CREATE INDEX sessions_user ON sessions (user_id);

-- Single sign-on accounts linked to users: an identity provider's issuer
-- and subject, never an email address.
CREATE TABLE user_identities (
	issuer  text COLLATE "C" NOT NULL,
	subject text COLLATE "C" NOT NULL,
	user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	PRIMARY KEY (issuer, subject)
);

-- +goose Down
DROP TABLE user_identities;
DROP TABLE sessions;
DROP TABLE user_recovery_codes;
DROP TABLE user_tenants;
DROP TABLE users;
