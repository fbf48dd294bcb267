-- The embedded event log: one table, readable with any SQLite tool.
-- Instants are microseconds since the Unix epoch, UTC:
--   SELECT datetime(occurred_at_us / 1000000, 'unixepoch'), stream, event_type FROM events;
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

CREATE UNIQUE INDEX IF NOT EXISTS events_by_event_id ON events (event_id);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON events (stream, stream_version);
