-- approval-gate's PostgreSQL schema, version 1. Applied by migrations.rs under an advisory
-- transaction lock; never edited once released: a change is a new numbered file.

-- One row per approval. `record` (the versioned codec of store/codec.rs) is the source of truth;
-- the other columns are what queries filter and order on. A decision is a conditional update
-- (`WHERE status = 0`), so the first of several instances wins.
CREATE TABLE approvals (
    id              bytea    PRIMARY KEY,           -- ULID, 16 bytes
    status          smallint NOT NULL,              -- 0 pending; see domain::Status
    requested_by    text     NOT NULL,              -- the agent token's name
    agent           text     NOT NULL,
    session_id      text     NOT NULL,
    tool_name       text     NOT NULL,
    tool_input      jsonb    NOT NULL,
    idempotency_key text,
    created_at_ms   bigint   NOT NULL,
    expires_at_ms   bigint   NOT NULL,
    decided_at_ms   bigint,
    record          bytea    NOT NULL
);
CREATE UNIQUE INDEX approvals_idempotency ON approvals (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX approvals_pending_by_deadline ON approvals (expires_at_ms) WHERE status = 0;
CREATE INDEX approvals_by_status ON approvals (status, id);
CREATE INDEX approvals_ended ON approvals (decided_at_ms) WHERE decided_at_ms IS NOT NULL;

-- The audit trail: append-only. Several events observed together are one row.
CREATE TABLE approval_events (
    seq         bigserial PRIMARY KEY,
    approval_id bytea     NOT NULL,
    at_ms       bigint    NOT NULL,
    events      jsonb     NOT NULL
);
CREATE INDEX approval_events_by_approval ON approval_events (approval_id, seq);

-- The notifiers' outboxes, one per channel, consumed in seq order. An instance claims entries
-- with FOR UPDATE SKIP LOCKED and a lease, so one that dies mid-delivery leaves nothing claimed
-- past lease_until_ms.
CREATE TABLE outbox (
    seq            bigserial PRIMARY KEY,
    channel        smallint  NOT NULL,
    entry          bytea     NOT NULL,
    attempts       integer   NOT NULL DEFAULT 0,
    not_before_ms  bigint    NOT NULL DEFAULT 0,
    claimed_by     text,
    lease_until_ms bigint
);
CREATE INDEX outbox_by_channel ON outbox (channel, seq);

CREATE TABLE dead_letters (
    seq        bigint   PRIMARY KEY,
    channel    smallint NOT NULL,
    reason     text     NOT NULL,
    entry      bytea    NOT NULL,
    dead_at_ms bigint   NOT NULL
);

-- Which Telegram messages show an approval (edited when it is decided).
CREATE TABLE telegram_messages (
    approval_id bytea PRIMARY KEY,
    refs        bytea NOT NULL
);

CREATE TABLE grants (
    id            text   PRIMARY KEY,
    grant_json    jsonb  NOT NULL,
    expires_at_ms bigint NOT NULL
);

-- The Telegram poller's lease: one row. Taken and renewed by a conditional update on epoch; the
-- update offset is written only by the holder of the current epoch (fencing).
CREATE TABLE telegram_leader (
    name           text   PRIMARY KEY,
    holder         text   NOT NULL,
    epoch          bigint NOT NULL,
    lease_until_ms bigint NOT NULL,
    update_offset  bigint NOT NULL DEFAULT 0
);

CREATE TABLE meta (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
