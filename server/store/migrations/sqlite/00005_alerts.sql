-- Security alerts (server/alert): ACL denials, malformed reports, repeated
-- connection failures, agents' own security events. Repeats of one alert
-- within a window collapse into one row whose count grows.
-- Times are INTEGER microseconds since the Unix epoch, UTC.

-- +goose Up
CREATE TABLE alerts (
	id       TEXT    NOT NULL PRIMARY KEY,
	time     INTEGER NOT NULL,         -- first occurrence
	last     INTEGER NOT NULL,         -- latest occurrence
	tenant   TEXT    NOT NULL DEFAULT '', -- '' when unknown
	device   TEXT    NOT NULL DEFAULT '', -- '' when none
	kind     TEXT    NOT NULL,
	severity TEXT    NOT NULL,
	source   TEXT    NOT NULL,
	message  TEXT    NOT NULL DEFAULT '',
	fields   TEXT,                     -- JSON object; NULL when empty
	count    INTEGER NOT NULL CHECK (count >= 1)
) STRICT;

CREATE INDEX alerts_time ON alerts (time, id);
CREATE INDEX alerts_tenant_time ON alerts (tenant, time, id);
CREATE INDEX alerts_device_time ON alerts (device, time, id);
CREATE INDEX alerts_kind_time ON alerts (kind, time, id);

-- +goose Down
DROP TABLE alerts;
