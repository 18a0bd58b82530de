-- Replay matches every syscall of an invocation by (ordinal, primitive, arguments hash);
-- journal rows now have four statuses: intent | done (an effect's outcome) | read (a read's
-- outcome) | retry (a call that failed in a way a replay makes again: it runs again).
--
-- Whether the invocation's first run started in an isolate that had already served earlier
-- calls of its process (values kept in globals between calls are not replayed).
ALTER TABLE invocations ADD COLUMN carried INTEGER NOT NULL DEFAULT 0;
