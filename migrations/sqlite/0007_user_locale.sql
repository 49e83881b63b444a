-- Per-user language (SPEC.md "Per-user language"): BCP 47, e.g. `de` or `pt-BR`; NULL means the
-- default templates and no `language` on the user's Persona links. Existing rows stay as they are.
ALTER TABLE users ADD COLUMN locale TEXT NULL;
