-- When the stream says a repo must be fetched again (#sync, or a commit whose
-- `since` does not follow the last rev seen), the request is recorded here
-- until an import clears it.
ALTER TABLE parity_repos ADD COLUMN IF NOT EXISTS resync_requested_at TIMESTAMPTZ;
