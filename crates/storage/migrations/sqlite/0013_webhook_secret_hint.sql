-- Webhook signing secrets are sealed by the credential vault from now on (the `secret` and
-- `prev_secret` columns hold vault values). The mask shown in answers needs the secret's last
-- four characters, kept here in the clear. Rows stored before this carry their secret as issued
-- until the server seals them at start (SQL has no vault key); their hint is taken now.
ALTER TABLE webhooks ADD COLUMN secret_hint TEXT;
UPDATE webhooks SET secret_hint = substr(secret, -4) WHERE secret LIKE 'whsec\_%' ESCAPE '\';
