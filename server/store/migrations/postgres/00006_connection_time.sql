-- When the MQTT connection of the device's latest state was made
-- (wire.State.Conn): a last will applies only to the connection it
-- belongs to, or a newer one.

-- +goose Up
ALTER TABLE devices ADD COLUMN conn_time timestamptz; -- NULL: not reported

-- +goose Down
ALTER TABLE devices DROP COLUMN conn_time;
