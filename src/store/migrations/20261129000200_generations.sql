-- A process's rollback generation: bumped by each checkpoint rollback, so that a keyed
-- call (Kernel::syscall_once) journaled before a rollback is never replayed after it.
ALTER TABLE processes ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- The SHA-256 of the call an invocation runs, so that a key reused for another call is
-- refused rather than answered with the other call's outcome.
ALTER TABLE invocations ADD COLUMN args_hash TEXT;
