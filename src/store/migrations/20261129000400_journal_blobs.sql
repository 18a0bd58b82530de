-- Large journaled outcomes, stored once by content hash (the journal row holds
-- {"blob": sha256, "bytes": n}); deleted with the last journal row that refers to them.
CREATE TABLE journal_blobs (
    sha256      TEXT    PRIMARY KEY,
    bytes       INTEGER NOT NULL,
    data        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
ALTER TABLE journal ADD COLUMN blob TEXT;
-- serves: is a blob still referred to
CREATE INDEX journal_blob ON journal(blob);
