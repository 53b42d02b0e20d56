-- Attestation (DESIGN.md §5): which TPM each device enrolled with, the
-- grants that let a device enroll, and every attestation verdict with the
-- evidence it was reached on (for `dialtone devices evidence`).

-- +goose Up
CREATE TABLE device_identities (
	device    TEXT    NOT NULL PRIMARY KEY,
	tenant    TEXT    NOT NULL,
	model     TEXT    NOT NULL,
	ek_hash   BYTEA    NOT NULL UNIQUE, -- SHA-256 of the EK's TPMT_PUBLIC: one TPM, one device
	ek_public BYTEA    NOT NULL,
	ek_cert   BYTEA,                    -- NULL when the EK was approved by an operator
	ak_public BYTEA    NOT NULL,
	token_hash BYTEA   NOT NULL,        -- SHA-256 of the attestation token the device got at enrollment
	method    TEXT    NOT NULL,        -- how the TPM was trusted: ek-cert | approved
	grant_id  TEXT    NOT NULL,        -- the grant that let it enroll
	enrolled  TIMESTAMPTZ NOT NULL
);

CREATE TABLE enroll_grants (
	id       TEXT    NOT NULL PRIMARY KEY,
	kind     TEXT    NOT NULL CHECK (kind IN ('token', 'serial', 'ek')),
	hash     BYTEA    NOT NULL, -- token: SHA-256 of it; serial: of the device ID; ek: the EK hash
	tenant   TEXT    NOT NULL,
	device   TEXT    NOT NULL DEFAULT '', -- '' for a token good for any device ID
	model    TEXT    NOT NULL DEFAULT '', -- '' for any model
	created  TIMESTAMPTZ NOT NULL,
	expires  TIMESTAMPTZ NOT NULL,
	used     TIMESTAMPTZ,                   -- NULL until used (each grant enrolls once)
	used_by  TEXT    NOT NULL DEFAULT '',
	UNIQUE (kind, hash)
);

CREATE TABLE attestations (
	id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device    TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	time      TIMESTAMPTZ NOT NULL,
	outcome   TEXT    NOT NULL,
	reason    TEXT    NOT NULL DEFAULT '',
	detail    TEXT    NOT NULL DEFAULT '',
	booted    TEXT    NOT NULL DEFAULT '', -- the booted version the log showed
	nonce     BYTEA,                        -- the evidence; NULL for a stale verdict
	quote     BYTEA,
	signature BYTEA,
	pcr       INTEGER NOT NULL DEFAULT 0,
	pcr_value BYTEA,
	log       BYTEA
);

CREATE INDEX attestations_device ON attestations (device, id);

-- +goose Down
DROP TABLE attestations;
DROP TABLE enroll_grants;
DROP TABLE device_identities;
