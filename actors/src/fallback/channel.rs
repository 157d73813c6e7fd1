//! The fallback channels themselves: their configuration, the built transports, and how each
//! delivers a batch (console lines, one appended and fsynced block of file lines, one email per
//! notification). Nothing here knows about queues, retries or the actor.

use std::path::PathBuf;

use serde::Serialize;

use super::email::{EmailChannel, EmailSettings};
use super::{Announcement, console, file, text};
use crate::notification::{Notification, OperatorHints};
use crate::store::Channel as Queue;

#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Console,
    /// `max_bytes`: rotate to `<path>.1` past this size (0 = never).
    File {
        path: PathBuf,
        max_bytes: u64,
    },
    Email(EmailSettings),
}

impl ChannelConfig {
    pub fn name(&self) -> &'static str {
        self.queue().as_str()
    }

    /// The durable queue this channel consumes under strategy `all`.
    pub fn queue(&self) -> Queue {
        match self {
            ChannelConfig::Console => Queue::Console,
            ChannelConfig::File { .. } => Queue::File,
            ChannelConfig::Email(_) => Queue::Email,
        }
    }
}

/// What a channel is asked to deliver.
pub(super) enum Outgoing {
    Approval(Box<Notification>),
    Announcement(Announcement),
}

impl Outgoing {
    pub(super) fn label(&self) -> (String, Option<String>) {
        match self {
            Outgoing::Approval(n) => (n.approval.id.to_string(), n.request_id.clone()),
            Outgoing::Announcement(a) => (a.subject.clone(), None),
        }
    }

    /// The id of the request that caused the notification, when there was one.
    pub(super) fn request_id(&self) -> Option<&str> {
        match self {
            Outgoing::Approval(n) => n.request_id.as_deref(),
            Outgoing::Announcement(_) => None,
        }
    }

    /// The approval and what happened to it, for its history.
    pub(super) fn about(&self) -> Option<(crate::domain::ApprovalId, &'static str)> {
        match self {
            Outgoing::Approval(n) => Some((n.approval.id, n.kind())),
            Outgoing::Announcement(_) => None,
        }
    }
}

/// A ready-to-use channel (the email transport is built once, at start).
pub(super) enum Channel {
    Console,
    File(PathBuf, u64),
    Email(Box<EmailChannel>),
    /// A channel whose configuration could not be turned into a transport; every delivery
    /// fails with this reason and hands over to the next channel.
    Broken(String),
}

impl Channel {
    pub(super) fn build(config: &ChannelConfig) -> Self {
        match config {
            ChannelConfig::Console => Channel::Console,
            ChannelConfig::File { path, max_bytes } => Channel::File(path.clone(), *max_bytes),
            ChannelConfig::Email(settings) => match EmailChannel::new(settings) {
                Ok(channel) => Channel::Email(Box::new(channel)),
                Err(error) => Channel::Broken(error),
            },
        }
    }

    /// Deliver a batch; one result per item, in order.
    pub(super) async fn deliver(
        &self,
        batch: &[&Outgoing],
        hints: &OperatorHints,
    ) -> Vec<Result<(), String>> {
        match self {
            Channel::Console => batch
                .iter()
                .map(|outgoing| match outgoing {
                    Outgoing::Approval(n) => console::deliver(n, hints),
                    Outgoing::Announcement(a) => console::announce(a),
                })
                .collect(),
            Channel::File(path, max_bytes) => {
                let lines: String = batch
                    .iter()
                    .map(|outgoing| match outgoing {
                        Outgoing::Approval(n) => file::approval_line(n, hints),
                        Outgoing::Announcement(a) => file::announcement_line(a),
                    })
                    .collect();
                let result = file::append(path, &lines, *max_bytes);
                vec![result; batch.len()]
            }
            Channel::Email(email) => {
                let mut results = Vec::with_capacity(batch.len());
                for outgoing in batch {
                    let (subject, body) = match outgoing {
                        Outgoing::Approval(n) => text::email(n, hints),
                        Outgoing::Announcement(a) => {
                            (format!("[approval-gate] {}", a.subject), a.text.clone())
                        }
                    };
                    // An approval's own recipients (its rule's `notify`, its escalation
                    // steps') get its mail beside `fallback.email.to`.
                    let extra: Vec<&str> = match outgoing {
                        Outgoing::Approval(n) => n
                            .approval
                            .route
                            .iter()
                            .chain(&n.approval.escalated_to)
                            .filter_map(crate::domain::Target::email)
                            .collect(),
                        Outgoing::Announcement(_) => Vec::new(),
                    };
                    results.push(email.send_to(&extra, &subject, body).await);
                }
                results
            }
            Channel::Broken(error) => vec![Err(error.clone()); batch.len()],
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct ChannelStats {
    pub(super) channel: &'static str,
    pub(super) delivered: u64,
    pub(super) failed: u64,
    pub(super) last_error: Option<String>,
    pub(super) consecutive_failures: u64,
}
