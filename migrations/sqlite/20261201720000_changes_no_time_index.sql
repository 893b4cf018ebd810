-- The change log's retention sweep finds the prefix to remove on the
-- primary key (`committed_at` grows with `seq`), so the `committed_at`
-- index is no longer read; it cost every append an index insert under the
-- append lock (issue 14: the change log's cost to the consumer).
DROP INDEX IF EXISTS parity_changes_committed_at;
