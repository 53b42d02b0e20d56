-- Devices and the events they report (DESIGN.md §6).
-- Times are INTEGER microseconds since the Unix epoch, UTC.

-- +goose Up
CREATE TABLE devices (
	id            TEXT    NOT NULL PRIMARY KEY,
	tenant        TEXT    NOT NULL,
	model         TEXT    NOT NULL DEFAULT '',
	hardware      TEXT    NOT NULL DEFAULT '',
	version       TEXT    NOT NULL DEFAULT '',
	slot          TEXT    NOT NULL DEFAULT '',
	update_state  TEXT    NOT NULL DEFAULT '',
	online        INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
	tuf_root      INTEGER NOT NULL DEFAULT 0,
	tuf_timestamp INTEGER NOT NULL DEFAULT 0,
	tuf_snapshot  INTEGER NOT NULL DEFAULT 0,
	tuf_targets   INTEGER NOT NULL DEFAULT 0,
	state_time    INTEGER,          -- st.Time of the stored state; NULL before the first state
	last_seen     INTEGER NOT NULL
) STRICT;

CREATE INDEX devices_tenant_id ON devices (tenant, id);
CREATE INDEX devices_model ON devices (model);

CREATE TABLE events (
	device   TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	id       TEXT    NOT NULL,
	tenant   TEXT    NOT NULL,
	schema   INTEGER NOT NULL,
	seq      INTEGER NOT NULL CHECK (seq >= 0),
	time     INTEGER NOT NULL,
	type     TEXT    NOT NULL,
	version  TEXT    NOT NULL DEFAULT '',
	message  TEXT    NOT NULL DEFAULT '',
	fields   TEXT,                  -- JSON object, NULL when empty
	received INTEGER NOT NULL,
	PRIMARY KEY (device, id)
) STRICT;

CREATE INDEX events_device_seq ON events (device, seq);

-- +goose Down
DROP TABLE events;
DROP TABLE devices;
