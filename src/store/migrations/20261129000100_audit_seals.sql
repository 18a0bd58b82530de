-- Each audit record's seal: an HMAC of its hash, keyed by the runtime's key, so that a
-- recomputed chain is found (see src/audit/anchor.rs).
ALTER TABLE audit ADD COLUMN mac TEXT;
