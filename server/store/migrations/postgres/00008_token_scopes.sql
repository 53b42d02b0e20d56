-- API tokens are scoped to a tenant: the token acts with its role in that
-- tenant only. '' is a token of no tenant: the CI publisher tokens made
-- before tokens had tenants, which publish firmware for their models
-- (publishing is platform-wide, limited by models, not by tenant).

-- +goose Up
ALTER TABLE api_tokens ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE api_tokens DROP COLUMN tenant;
