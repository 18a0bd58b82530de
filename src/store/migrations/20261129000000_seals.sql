-- Seals: the HMAC the kernel computes over each row it trusts as a grant, an answer or an
-- image (see src/store/seal.rs). A row without a valid seal is refused when read back.
ALTER TABLE capabilities ADD COLUMN mac TEXT;
ALTER TABLE human_requests ADD COLUMN mac TEXT;
ALTER TABLE images ADD COLUMN mac TEXT;
