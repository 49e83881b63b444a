//! Simulator semantics: expiry, resume, idempotency, pagination, limits, links, webhooks.
