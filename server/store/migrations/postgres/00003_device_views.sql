-- The operator views of the fleet: an attestation column, and indexes so that
-- a filtered, sorted page of devices reads little more than it returns. Each
-- sort order (store.Sort*: key, tenant, id) has its index, which also serves
-- keyset pagination and filtering on its key, with or without a tenant, in
-- the default order (tenant, id).

-- +goose Up
ALTER TABLE devices ADD COLUMN attestation text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN attestation_time timestamptz; -- NULL until the first outcome

DROP INDEX devices_model;
CREATE INDEX devices_model_tenant_id ON devices (model, tenant, id);
CREATE INDEX devices_version_tenant_id ON devices (version, tenant, id);
CREATE INDEX devices_last_seen_tenant_id ON devices (last_seen, tenant, id);
CREATE INDEX devices_attestation_tenant_id ON devices (attestation, tenant, id);
CREATE INDEX devices_online_last_seen ON devices (online, last_seen, tenant, id);

-- +goose Down
DROP INDEX devices_online_last_seen;
DROP INDEX devices_attestation_tenant_id;
DROP INDEX devices_last_seen_tenant_id;
DROP INDEX devices_version_tenant_id;
DROP INDEX devices_model_tenant_id;
CREATE INDEX devices_model ON devices (model);
ALTER TABLE devices DROP COLUMN attestation_time;
ALTER TABLE devices DROP COLUMN attestation;
