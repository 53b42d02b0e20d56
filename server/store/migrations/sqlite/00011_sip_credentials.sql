-- SIP credentials (issue 7, item 4): each device's SIP password, as
-- server/sipsecret encrypted it (AES-256-GCM under the data directory's
-- key, bound to the device and tenant). The database never holds one in
-- the clear.

-- +goose Up
CREATE TABLE sip_credentials (
	device     TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
	tenant     TEXT    NOT NULL,
	ciphertext BLOB    NOT NULL,
	updated    INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE sip_credentials;
