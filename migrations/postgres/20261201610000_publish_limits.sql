-- Publish rate limits shared by every parity process on this database
-- (issue 13): one row per scope, 'did:<did>' for an account's write budget
-- and 429 pauses, 'host:<origin>' for a PDS host's 429 pauses.
--
-- hour_start/hour_points and day_start/day_points are fixed windows like the
-- reference PDS's own (create 3, update 2, delete 1 points; 5,000 an hour,
-- 35,000 a day by default, publish.points_per_hour/points_per_day): a
-- window starts at its first charge after the previous one ended. A write
-- is charged before it is sent, in one conditional UPDATE, so several
-- processes never overspend. paused_until: no call for this scope before
-- then (Retry-After / ratelimit-reset of a 429).
CREATE TABLE IF NOT EXISTS parity_publish_limits (
    scope        TEXT COLLATE "C" PRIMARY KEY,
    hour_start   TIMESTAMPTZ NOT NULL DEFAULT now(),
    hour_points  BIGINT NOT NULL DEFAULT 0,
    day_start    TIMESTAMPTZ NOT NULL DEFAULT now(),
    day_points   BIGINT NOT NULL DEFAULT 0,
    paused_until TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
