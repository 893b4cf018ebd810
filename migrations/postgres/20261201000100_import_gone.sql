-- A fifth import status, 'gone': the repo can never be imported (the
-- account was deleted, or its PDS answers RepoNotFound / RepoDeactivated).
-- Terminal: `parity resume` skips it; a newer #sync or `import --force`
-- queues the pair again.
ALTER TABLE parity_import_states DROP CONSTRAINT IF EXISTS parity_import_states_status_check;
ALTER TABLE parity_import_states ADD CONSTRAINT parity_import_states_status_check
    CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'gone'));
