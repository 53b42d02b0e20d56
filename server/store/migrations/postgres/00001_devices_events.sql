-- Devices and the events they report (DESIGN.md §6), as in the SQLite
-- migrations of the same number. Text is COLLATE "C" so that it sorts by its
-- bytes, as SQLite's does, whatever the database's default collation; it also
-- lets equality and ordering use the same plain B-tree indexes.

-- +goose Up
CREATE TABLE devices (
	id            text COLLATE "C" NOT NULL PRIMARY KEY,
	tenant        text COLLATE "C" NOT NULL,
	model         text COLLATE "C" NOT NULL DEFAULT '',
	hardware      text COLLATE "C" NOT NULL DEFAULT '',
	version       text COLLATE "C" NOT NULL DEFAULT '',
	slot          text COLLATE "C" NOT NULL DEFAULT '',
	update_state  text COLLATE "C" NOT NULL DEFAULT '',
	online        boolean NOT NULL DEFAULT false,
	tuf_root      bigint NOT NULL DEFAULT 0,
	tuf_timestamp bigint NOT NULL DEFAULT 0,
	tuf_snapshot  bigint NOT NULL DEFAULT 0,
	tuf_targets   bigint NOT NULL DEFAULT 0,
	state_time    timestamptz,      -- st.Time of the stored state; NULL before the first state
	last_seen     timestamptz NOT NULL
);

CREATE INDEX devices_tenant_id ON devices (tenant, id);
CREATE INDEX devices_model ON devices (model);

CREATE TABLE events (
	device   text COLLATE "C" NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	id       text COLLATE "C" NOT NULL,
	tenant   text COLLATE "C" NOT NULL,
	schema   integer NOT NULL,
	seq      bigint NOT NULL CHECK (seq >= 0),
	time     timestamptz NOT NULL,
	type     text NOT NULL,
	version  text NOT NULL DEFAULT '',
	message  text NOT NULL DEFAULT '',
	fields   jsonb,                 -- NULL when empty
	received timestamptz NOT NULL,
	-- Receive order, for events with the same seq and received time (SQLite
	-- has its rowid).
	n        bigint GENERATED ALWAYS AS IDENTITY,
	PRIMARY KEY (device, id)
);

CREATE INDEX events_device_seq ON events (device, seq, received, n);

-- +goose Down
DROP TABLE events;
DROP TABLE devices;
