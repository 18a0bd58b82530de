-- Ownership of tool invocations: one host at a time holds an invocation's lease. A host
-- renews its leases (heartbeat); another host takes an invocation over only once its lease
-- has expired, and the takeover raises the epoch.

CREATE TABLE leases (
    invocation_id TEXT    PRIMARY KEY,
    host          TEXT    NOT NULL,           -- the owning host (one per opened kernel)
    epoch         INTEGER NOT NULL,           -- raised by every takeover
    heartbeat     INTEGER NOT NULL            -- Unix ms of the owner's last renewal
);

-- Fencing: every journal write of an invocation inserts (invocation, host, epoch) here in
-- the same transaction. The row is never kept; the insert aborts the write when the lease
-- is held by another host or epoch (a lease row is written with the invocation row, and a
-- takeover always writes one), so a slow or resurrected host cannot record past a takeover.
CREATE TABLE lease_fence (
    invocation_id TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    epoch         INTEGER NOT NULL
);

CREATE TRIGGER lease_fence_check BEFORE INSERT ON lease_fence
BEGIN
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM leases WHERE invocation_id = NEW.invocation_id
                     AND NOT (host = NEW.host AND epoch = NEW.epoch))
        THEN RAISE(ABORT, 'stale lease: another host owns this invocation')
        ELSE RAISE(IGNORE)
    END;
END;
