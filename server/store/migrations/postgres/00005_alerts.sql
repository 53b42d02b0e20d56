-- Security alerts (server/alert), as in the SQLite migration of the same
-- number: ACL denials, malformed reports, repeated connection failures,
-- agents' own security events. Repeats of one alert within a window collapse
-- into one row whose count grows.

-- +goose Up
CREATE TABLE alerts (
	id       text COLLATE "C" NOT NULL PRIMARY KEY,
	time     timestamptz NOT NULL,     -- first occurrence
	last     timestamptz NOT NULL,     -- latest occurrence
	tenant   text COLLATE "C" NOT NULL DEFAULT '', -- '' when unknown
	device   text COLLATE "C" NOT NULL DEFAULT '', -- '' when none
	kind     text COLLATE "C" NOT NULL,
	severity text NOT NULL,
	source   text NOT NULL,
	message  text NOT NULL DEFAULT '',
	fields   jsonb,                    -- NULL when empty
	count    integer NOT NULL CHECK (count >= 1)
);

CREATE INDEX alerts_time ON alerts (time, id);
CREATE INDEX alerts_tenant_time ON alerts (tenant, time, id);
CREATE INDEX alerts_device_time ON alerts (device, time, id);
CREATE INDEX alerts_kind_time ON alerts (kind, time, id);

-- +goose Down
DROP TABLE alerts;
