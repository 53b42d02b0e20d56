-- The version a rollout wants a device to run (server/rollout).

-- +goose Up
ALTER TABLE devices ADD COLUMN desired_version text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN desired_time timestamptz; -- NULL until first set

-- +goose Down
ALTER TABLE devices DROP COLUMN desired_time;
ALTER TABLE devices DROP COLUMN desired_version;
