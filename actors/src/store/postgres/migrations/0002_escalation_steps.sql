-- approval-gate's PostgreSQL schema, version 2: when each pending approval's next escalation
-- step is due, so that any instance finds the steps of approvals whose own instance is gone
-- (the registry's orphan sweep). Written from the record (`next_escalation_ms`) on every write.
ALTER TABLE approvals ADD COLUMN next_step_ms bigint;
CREATE INDEX approvals_pending_by_step ON approvals (next_step_ms)
    WHERE status = 0 AND next_step_ms IS NOT NULL;
