//! Signed `callback_data` for the Approve / Reject buttons.
//!
//! Format: `<action>:<approval id>:<mac>` where action is `a`, `r` or `s` (approve for the session), the id is the 26-character
//! ULID and the mac is the first 16 bytes of HMAC-SHA256(callback_secret, "<action>:<id>") in hex:
//! 61 bytes, inside Telegram's 64-byte limit. A tap decides only if the mac verifies, so nobody
//! can forge a button for an approval they were not shown.

use ring::hmac;

use crate::domain::{ApprovalId, Outcome};

const MAC_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Reject,
    /// Approve, and allow this tool in this session for `agents.session_grant`.
    ApproveSession,
    /// On a digest: approve every approval of the line that lists this one (identical
    /// requests); the line is read from the digest stored with the tapped message.
    ApproveGroup,
    /// On a digest: reject every approval of the line.
    RejectGroup,
}

impl Action {
    fn code(self) -> char {
        match self {
            Action::Approve => 'a',
            Action::Reject => 'r',
            Action::ApproveSession => 's',
            Action::ApproveGroup => 'A',
            Action::RejectGroup => 'R',
        }
    }

    /// A digest's button for a whole line.
    pub fn is_group(self) -> bool {
        matches!(self, Action::ApproveGroup | Action::RejectGroup)
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Action::Approve | Action::ApproveSession | Action::ApproveGroup => Outcome::Approve,
            Action::Reject | Action::RejectGroup => Outcome::Reject,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("malformed callback data")]
    Malformed,
    #[error("callback data signature does not verify")]
    BadSignature,
}

pub struct CallbackCodec {
    key: hmac::Key,
    /// The secret before a rotation, still accepted (never used to sign) until the instant.
    previous: Option<(hmac::Key, std::time::Instant)>,
}

impl CallbackCodec {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            previous: None,
        }
    }

    /// Also accept buttons signed with `previous` until `until` (a rotation's grace period:
    /// messages already in the chat keep working for a while).
    pub fn with_previous(mut self, previous: &[u8], until: std::time::Instant) -> Self {
        self.previous = Some((hmac::Key::new(hmac::HMAC_SHA256, previous), until));
        self
    }

    fn verifies(key: &hmac::Key, payload: &str, mac: &[u8]) -> bool {
        // Recompute and compare in constant time (ring's verify needs the full tag).
        let expected = hmac::sign(key, payload.as_bytes());
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &expected.as_ref()[..MAC_BYTES],
            mac,
        ))
    }

    pub fn encode(&self, id: ApprovalId, action: Action) -> String {
        let payload = format!("{}:{id}", action.code());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}:{}", hex::encode(&tag.as_ref()[..MAC_BYTES]))
    }

    pub fn decode(&self, data: &str) -> Result<(ApprovalId, Action), CallbackError> {
        let mut parts = data.splitn(3, ':');
        let (Some(code), Some(id), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CallbackError::Malformed);
        };
        let action = match code {
            "a" => Action::Approve,
            "r" => Action::Reject,
            "s" => Action::ApproveSession,
            "A" => Action::ApproveGroup,
            "R" => Action::RejectGroup,
            _ => return Err(CallbackError::Malformed),
        };
        let id: ApprovalId = id.parse().map_err(|_| CallbackError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| CallbackError::Malformed)?;
        if mac.len() != MAC_BYTES {
            return Err(CallbackError::Malformed);
        }
        let payload = format!("{code}:{id}");
        let current = Self::verifies(&self.key, &payload, &mac);
        let previous = self.previous.as_ref().is_some_and(|(key, until)| {
            std::time::Instant::now() < *until && Self::verifies(key, &payload, &mac)
        });
        if !(current || previous) {
            return Err(CallbackError::BadSignature);
        }
        Ok((id, action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_telegrams_64_bytes() {
        let codec = CallbackCodec::new(b"secret");
        let id = ApprovalId::new();
        for action in [
            Action::Approve,
            Action::Reject,
            Action::ApproveSession,
            Action::ApproveGroup,
            Action::RejectGroup,
        ] {
            let data = codec.encode(id, action);
            assert!(data.len() <= 64, "{} bytes", data.len());
            assert_eq!(codec.decode(&data), Ok((id, action)));
        }
    }

    #[test]
    fn a_rotated_secret_is_accepted_only_during_its_grace() {
        let id = ApprovalId::new();
        let old = CallbackCodec::new(b"old-secret").encode(id, Action::Approve);
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let rotated = CallbackCodec::new(b"new-secret").with_previous(b"old-secret", later);
        assert_eq!(rotated.decode(&old), Ok((id, Action::Approve)));
        let expired = CallbackCodec::new(b"new-secret")
            .with_previous(b"old-secret", std::time::Instant::now());
        assert_eq!(expired.decode(&old), Err(CallbackError::BadSignature));
    }

    #[test]
    fn rejects_tampering_and_other_keys() {
        let codec = CallbackCodec::new(b"secret");
        let id = ApprovalId::new();
        let data = codec.encode(id, Action::Reject);
        // Flip the action but keep the mac.
        let forged = format!("a{}", &data[1..]);
        assert_eq!(codec.decode(&forged), Err(CallbackError::BadSignature));
        assert_eq!(
            CallbackCodec::new(b"other").decode(&data),
            Err(CallbackError::BadSignature)
        );
        for garbage in [
            "",
            "a",
            "a:zzz:00",
            "x:01ARZ3NDEKTSV4RRFFQ69G5FAV:00",
            "a:01ARZ3NDEKTSV4RRFFQ69G5FAV:nothex",
        ] {
            assert_eq!(
                codec.decode(garbage),
                Err(CallbackError::Malformed),
                "{garbage}"
            );
        }
    }
}
