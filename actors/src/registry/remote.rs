//! Changes made by other instances on a store several instances share (PostgreSQL): applied to
//! this registry's view so that its long polls wake, its sweeper forgets deadlines that no
//! longer matter and its counts stay near the truth.
//!
//! The store's LISTEN connection tells of every approval another instance ended
//! ([`RemoteChange::Ended`]) and of every (re)connection ([`RemoteChange::Resync`]): a
//! NOTIFY sent while the connection was down is lost, so a resync re-reads what this instance
//! waits for. Creates are not announced (a NOTIFY serialises commits cluster-wide, and the create
//! is the hot path); the deadlines of approvals created elsewhere are found by [`orphan_sweep`],
//! which asks the store for pending approvals past their deadline. Owns no state of its own: it
//! drives the registry's waiters, counts and sweeper through the registry's methods.

use std::time::Duration;

use actix::prelude::*;

use super::{ApprovalRegistry, NAME};
use crate::domain::{Approval, ApprovalId, Status};
use crate::supervision::{self, guarded};
use crate::sweeper::Expire;

/// How often the registry looks for due approvals no sweeper here armed.
pub const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How far past its deadline an approval must be before the orphan sweep takes it: the sweeper
/// of the instance that created it ends it on time; this is for the approvals whose instance
/// is gone (or never armed them), so they end at most this much late.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(2);

/// What another instance did, as this instance's store heard of it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum RemoteChange {
    /// An approval was ended (decided, timed out, cancelled) by another instance.
    Ended(ApprovalId),
    /// Wake-ups may have been missed: re-read.
    Resync,
}

impl ApprovalRegistry {
    /// The grant that answers `approval`, confirmed against the store when other instances
    /// share it (one may have revoked the grant this instance remembers).
    pub(super) fn granted_now(&mut self, approval: &Approval) -> Option<crate::domain::Decision> {
        let found = self.granted(approval);
        if found.is_none() || !self.store.shared() {
            return found;
        }
        self.refresh_grants();
        self.granted(approval)
    }

    /// Re-read the grants: other instances create and revoke them.
    fn refresh_grants(&mut self) {
        match self.store.grants() {
            Ok(grants) => {
                self.grants = grants.into_iter().map(|g| (g.id.clone(), g)).collect();
            }
            Err(error) => tracing::warn!(actor = NAME, %error, "cannot re-read the session grants"),
        }
    }

    /// Re-read the counts once no change of this instance is in flight: a count read while
    /// one is committed but not yet settled here would count it twice.
    pub(super) fn recount_when_settled(&mut self) {
        if self.unsettled.is_empty() {
            self.recount_wanted = false;
            self.recount();
        } else {
            self.recount_wanted = true;
        }
    }

    /// An approval another instance ended: wake whoever waits here, disarm its deadline, count
    /// it (once: only as its NOTIFY announces it, `counted`), and tell this instance's notifiers
    /// (the delivering instance sends its news).
    pub(super) fn ended_elsewhere(&mut self, approval: Approval, counted: bool) {
        if !approval.status.is_terminal() {
            return;
        }
        self.sweeper.do_send(crate::sweeper::Disarm {
            id: approval.id,
            deadline_ms: self.deadline_ms(&approval),
        });
        if self.waiters.wake(&approval) > 0 {
            self.publish_waiters();
        }
        // A watcher's view holds it as pending until told (a repeat is harmless to it).
        self.feed
            .publish(crate::feed::FeedEvent::Ended(std::sync::Arc::new(
                approval.clone(),
            )));
        if counted {
            self.count(Some(Status::Pending), approval.status);
            self.pending_changed(&approval.requested_by, false);
            // An approval may come with a session grant, written in the same transaction.
            if approval.status == Status::Approved {
                self.refresh_grants();
            }
        }
        self.notifiers.nudge();
    }

    fn remote_ended(&mut self, id: ApprovalId, counted: bool) {
        match self.store.get(id) {
            Ok(Some(approval)) => self.ended_elsewhere(approval, counted),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(actor = NAME, approval_id = %id, %error, "cannot read an approval another instance ended")
            }
        }
    }

    /// Re-read what may have changed unseen: the counts, the deadlines, and every approval a
    /// long poll here waits for. Not a reload: changes of this instance still in flight settle
    /// as they would have.
    fn resync(&mut self) {
        self.recount_when_settled();
        for id in self.waiters.ids() {
            self.remote_ended(id, false);
        }
    }

    /// Time out pending approvals past their deadline that no sweeper here armed (created on
    /// another instance, perhaps one that died). Every instance does this; the store's
    /// conditional update lets exactly one of them end each approval.
    pub(super) fn orphan_sweep(&mut self, ctx: &mut Context<Self>) {
        let grace = self.settings.grace_period + ORPHAN_AFTER;
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let before = self.clock.now_ms().saturating_sub(grace);
        for approval in self.still_pending(self.store.due(before, 100), "due approvals") {
            let deadline_ms = self.deadline_ms(&approval);
            ctx.notify(Expire {
                id: approval.id,
                deadline_ms,
            });
        }
        self.orphan_steps(ctx);
    }

    /// The approvals a store query found that are still pending when read (another instance
    /// may have ended one since); a failed query is logged and finds none.
    fn still_pending(
        &self,
        found: Result<Vec<crate::domain::ApprovalId>, crate::store::StoreError>,
        what: &str,
    ) -> Vec<crate::domain::Approval> {
        let ids = match found {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(actor = NAME, %error, "cannot look for {what}");
                return Vec::new();
            }
        };
        ids.into_iter()
            .filter_map(|id| self.store.get(id).ok().flatten())
            .filter(|approval| approval.status == Status::Pending)
            .collect()
    }

    /// Fire escalation steps that came due a while ago with nobody firing them (their
    /// instance is gone). Any instance may; the store's compare-and-set lets one of them.
    fn orphan_steps(&mut self, ctx: &mut Context<Self>) {
        if self.settings.escalation.is_empty() {
            return;
        }
        let late = i64::try_from(ORPHAN_AFTER.as_millis()).unwrap_or(i64::MAX);
        let now_ms = self.clock.now_ms();
        let due = self.store.due_steps(now_ms.saturating_sub(late), 100);
        for approval in self.still_pending(due, "due escalation steps") {
            // The steps as configured decide; the stored time only found it.
            if let Some(deadline_ms) =
                crate::domain::next_due_ms(&approval, &self.settings.escalation)
                    .filter(|&due| due <= now_ms)
            {
                ctx.notify(Expire {
                    id: approval.id,
                    deadline_ms,
                });
            }
        }
    }
}

impl Handler<RemoteChange> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, change: RemoteChange, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || match change {
            RemoteChange::Ended(id) => self.remote_ended(id, true),
            RemoteChange::Resync => self.resync(),
        });
    }
}

/// Start the orphan sweep on a store that needs one, and the recount: between recounts each
/// instance counts its own changes and the endings it hears of, not others' creates.
pub(super) fn start(ctx: &mut Context<ApprovalRegistry>) {
    supervision::run_interval(ctx, NAME, ORPHAN_SWEEP_EVERY, |act, ctx| {
        act.orphan_sweep(ctx)
    });
    supervision::run_interval(ctx, NAME, RECOUNT_EVERY, |act, _| {
        act.recount_when_settled();
        act.refresh_grants();
    });
}

/// How often a registry on a shared store re-reads the counts by status.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(30);
