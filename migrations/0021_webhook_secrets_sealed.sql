-- Webhook signing secrets sealed at rest: AES-256-GCM under an operator key the database never sees
-- (EXPORTER_WEBHOOK_SECRET_KEYS), with the subscription id as associated data, so a dump, a backup or a
-- role granted too much yields no organisation's secret, and a sealed value copied onto another
-- subscription does not open. `key_id` names the key that sealed the row, so the operator can rotate.
--
-- A migration cannot seal (it has no key), so the plaintext rows of 0014 stay as they are here and the
-- service seals them when it starts with a key (`Webhooks.reseal`), before it delivers anything; until
-- then a plaintext row still signs. A row is either sealed (key_id and sealed) or plaintext (secret),
-- never both; new subscriptions are only ever written sealed. The `secret` column can be dropped by a
-- later migration once no deployment has plaintext rows left.

ALTER TABLE public.webhook_secret
    ALTER COLUMN secret DROP NOT NULL,
    ADD COLUMN key_id text CHECK (key_id ~ '^[A-Za-z0-9_.-]{1,32}$'),
    -- 12-byte nonce + ciphertext (the secret's length) + 16-byte tag
    ADD COLUMN sealed bytea CHECK (octet_length(sealed) BETWEEN 12 + 32 + 16 AND 1024),
    ADD CONSTRAINT webhook_secret_sealed_or_plaintext CHECK (
        (secret IS NULL AND key_id IS NOT NULL AND sealed IS NOT NULL)
        OR (secret IS NOT NULL AND key_id IS NULL AND sealed IS NULL));

COMMENT ON COLUMN public.webhook_secret.secret IS
    'plaintext from before 0021; sealed by the service at start, then NULL';
COMMENT ON COLUMN public.webhook_secret.sealed IS
    'nonce || AES-256-GCM(secret, aad = context || subscription_id) under the key named by key_id';
