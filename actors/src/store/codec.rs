//! The on-disk form of an approval: a plain struct encoded with bincode behind a version byte.
//!
//! Kept separate from [`crate::domain::Approval`] so the domain can grow without breaking stored
//! records: a new layout gets a new version byte and a decoder here. Plain fields only, because
//! serde attributes such as `flatten` or `skip_serializing_if` silently lose data under bincode.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Actor, Approval, ApprovalId, Risk, Status, Target, TelegramMessageRef, Vote};

/// Version 1: the fields up to `comment` (and an unused message list). Read, never written.
const VERSION_1: u8 = 1;
/// Version 2: version 1 followed by the risk assessment, the quorum (`approvals_required`,
/// the votes so far), the route and the escalation steps fired. A binary that knows only version 1 refuses these records by name
/// (`unknown record version 2`) rather than misreading them.
const VERSION_2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("corrupt record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    id: [u8; 16],
    status: Status,
    session_id: String,
    tool_name: String,
    tool_input: String,
    reason: Option<String>,
    agent: Option<String>,
    requested_by: String,
    idempotency_key: Option<String>,
    created_at_ms: i64,
    expires_at_ms: i64,
    decided_at_ms: Option<i64>,
    decided_by: Option<Actor>,
    comment: Option<String>,
    /// Always empty now, kept so records written before stay readable (and new ones stay
    /// readable by the version before): which Telegram messages show an approval is the
    /// gateway's message log (`telegram_messages` tree), which costs the registry no commit.
    telegram_messages: Vec<TelegramMessageRef>,
}

/// What version 2 adds after a version 1 body.
#[derive(Serialize, Deserialize)]
struct Extension {
    risk: Risk,
    approvals_required: u8,
    votes: Vec<Vote>,
    route: Vec<Target>,
    escalations: u8,
    escalated_to: Vec<Target>,
    next_escalation_ms: Option<i64>,
}

pub fn encode(approval: &Approval) -> Result<Vec<u8>, CodecError> {
    let record = RecordV1 {
        id: approval.id.to_bytes(),
        status: approval.status,
        session_id: approval.session_id.clone(),
        tool_name: approval.tool_name.clone(),
        tool_input: approval.tool_input.clone(),
        reason: approval.reason.clone(),
        agent: approval.agent.clone(),
        requested_by: approval.requested_by.clone(),
        idempotency_key: approval.idempotency_key.clone(),
        created_at_ms: approval.created_at.timestamp_millis(),
        expires_at_ms: approval.expires_at.timestamp_millis(),
        decided_at_ms: approval.decided_at.map(|at| at.timestamp_millis()),
        decided_by: approval.decided_by.clone(),
        comment: approval.comment.clone(),
        telegram_messages: Vec::new(),
    };
    let extension = Extension {
        risk: approval.risk.clone(),
        approvals_required: approval.approvals_required,
        votes: approval.votes.clone(),
        route: approval.route.clone(),
        escalations: approval.escalations,
        escalated_to: approval.escalated_to.clone(),
        next_escalation_ms: approval.next_escalation_ms,
    };
    let mut bytes = vec![VERSION_2];
    bytes.extend(bincode::serde::encode_to_vec(
        &record,
        bincode::config::standard(),
    )?);
    bytes.extend(bincode::serde::encode_to_vec(
        &extension,
        bincode::config::standard(),
    )?);
    Ok(bytes)
}

/// `approval` as version 1 wrote it (no risk, quorum, route or escalations): what a record
/// stored by an older binary holds, for a compare-and-set against such a record.
pub fn encode_v1(approval: &Approval) -> Result<Vec<u8>, CodecError> {
    let mut bytes = encode(approval)?;
    let (record, used): (RecordV1, usize) =
        bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())?;
    drop(record);
    bytes.truncate(1 + used);
    bytes[0] = VERSION_1;
    Ok(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Approval, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION_1 && version != VERSION_2 {
        return Err(CodecError::UnknownVersion(version));
    }
    let (record, used): (RecordV1, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    let extension = if version == VERSION_2 {
        bincode::serde::decode_from_slice(&body[used..], bincode::config::standard())?.0
    } else {
        Extension {
            risk: Risk::default(),
            approvals_required: 1,
            votes: Vec::new(),
            route: Vec::new(),
            escalations: 0,
            escalated_to: Vec::new(),
            next_escalation_ms: None,
        }
    };
    Ok(Approval {
        id: ApprovalId::from_bytes(record.id),
        status: record.status,
        session_id: record.session_id,
        tool_name: record.tool_name,
        tool_input: record.tool_input,
        reason: record.reason,
        agent: record.agent,
        requested_by: record.requested_by,
        idempotency_key: record.idempotency_key,
        created_at: millis(record.created_at_ms),
        expires_at: millis(record.expires_at_ms),
        decided_at: record.decided_at_ms.map(millis),
        decided_by: record.decided_by,
        comment: record.comment,
        risk: extension.risk,
        approvals_required: extension.approvals_required.max(1),
        votes: extension.votes,
        route: extension.route,
        escalations: extension.escalations,
        escalated_to: extension.escalated_to,
        next_escalation_ms: extension.next_escalation_ms,
    })
}

pub fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Decision, NewApproval, Outcome};

    #[test]
    fn round_trips_every_field() {
        let new = NewApproval {
            session_id: "session".into(),
            tool_name: "Bash".into(),
            tool_input: r#"{"command":"rm -rf /tmp/x"}"#.into(),
            reason: Some("cleanup".into()),
            agent: Some("claude".into()),
            requested_by: "ci".into(),
            idempotency_key: Some("k1".into()),
            timeout: std::time::Duration::from_secs(600),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        };
        let now = millis(Utc::now().timestamp_millis());
        let mut approval = Approval::create(ApprovalId::new(), new, now);
        approval.risk = Risk::from_reasons(vec![crate::domain::RiskReason {
            source: "detector:recursive_delete".into(),
            level: crate::domain::RiskLevel::High,
            detail: "deletes files recursively".into(),
        }]);
        approval.approvals_required = 2;
        approval.route = vec![Target::Telegram("ops-db".into())];
        approval.escalations = 1;
        approval.escalated_to = vec![Target::Email("lead@example.com".into())];
        approval.next_escalation_ms = Some(now.timestamp_millis() + 60_000);
        approval.votes.push(Vote {
            actor: Actor::Operator("alice".into()),
            at_ms: now.timestamp_millis(),
            comment: Some("looks right".into()),
        });
        approval
            .apply(
                Decision {
                    outcome: Outcome::Approve,
                    actor: Actor::Telegram {
                        user_id: 7,
                        username: Some("op".into()),
                    },
                    comment: Some("ok".into()),
                },
                now,
            )
            .expect("pending");
        let decoded = decode(&encode(&approval).expect("encode")).expect("decode");
        assert_eq!(decoded, approval);
    }

    /// A version 1 record (as an older binary wrote it), pending, created at `now` ms.
    fn version_1(now: i64, telegram_messages: Vec<TelegramMessageRef>) -> Vec<u8> {
        let old = RecordV1 {
            id: ApprovalId::new().to_bytes(),
            status: Status::Pending,
            session_id: "s".into(),
            tool_name: "Bash".into(),
            tool_input: "{}".into(),
            reason: Some("why".into()),
            agent: None,
            requested_by: "ci".into(),
            idempotency_key: None,
            created_at_ms: now,
            expires_at_ms: now + 60_000,
            decided_at_ms: None,
            decided_by: None,
            comment: None,
            telegram_messages,
        };
        let mut bytes = vec![VERSION_1];
        bytes.extend(
            bincode::serde::encode_to_vec(&old, bincode::config::standard()).expect("encode"),
        );
        bytes
    }

    #[test]
    fn reads_records_written_with_telegram_messages() {
        // Before the message log became the one record of them, the registry copied each
        // sent message's id into the approval's record.
        let now = Utc::now().timestamp_millis();
        let message = TelegramMessageRef {
            chat_id: -100,
            message_id: 3,
        };
        let approval = decode(&version_1(now, vec![message])).expect("an old record decodes");
        assert_eq!(approval.tool_name, "Bash");
        assert_eq!(approval.expires_at, millis(now + 60_000));
    }

    #[test]
    fn a_version_1_record_is_encoded_again_byte_for_byte() {
        let bytes = version_1(Utc::now().timestamp_millis(), Vec::new());
        let approval = decode(&bytes).expect("decodes");
        assert_eq!(encode_v1(&approval).expect("encode_v1"), bytes);
        assert_ne!(
            encode(&approval).expect("encode"),
            bytes,
            "written as version 2"
        );
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode(&[9, 1, 2]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(decode(&[VERSION_1, 0xff, 0xff]).is_err());
        assert!(decode(&[VERSION_2, 0xff, 0xff]).is_err());
    }
}
