-- The embedded event log, readable with any SQLite tool.
--
-- `events` is the log itself, one row per event in position order; it is
-- only ever appended to. `stream_index` and `event_ids` are derived from it
-- (the writer fills them in sorted slices, a little behind the head; `meta`
-- says how far) and are rebuilt from `events` if lost.
--
-- Instants are microseconds since the Unix epoch, UTC:
--   SELECT datetime(occurred_at_us / 1000000, 'unixepoch'), stream, event_type
--   FROM events ORDER BY position DESC LIMIT 20;
-- `crc` is a CRC-32 of the row's content, checked on every read.

CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at_us INTEGER NOT NULL,
    recorded_at_us INTEGER NOT NULL,
    country        TEXT,
    tenant         TEXT,
    causation_id   TEXT,
    correlation_id TEXT,
    traceparent    TEXT,
    tracestate     TEXT,
    payload        BLOB    NOT NULL,
    crc            INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS stream_index (
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    PRIMARY KEY (stream, stream_version)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS event_ids (
    event_id BLOB    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- indexed_upto: every event at or before this position is in both indexes.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO meta (key, value) VALUES ('indexed_upto', 0);
