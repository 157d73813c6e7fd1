//! Long-poll waiters: who is waiting for which approval, bounded by a configured limit in all
//! and per agent token (one token's long polls must not use up every other agent's: a hook
//! that cannot wait is answered deny).

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::domain::{Approval, ApprovalId};

/// One registered waiter: its number, where the approval goes, whose token it came by.
type Waiter = (u64, oneshot::Sender<Approval>, std::sync::Arc<str>);

#[derive(Default)]
pub struct Waiters {
    by_approval: HashMap<ApprovalId, Vec<Waiter>>,
    /// Waiters per agent token (the approval's `requested_by`).
    by_agent: HashMap<std::sync::Arc<str>, usize>,
    count: usize,
    next: u64,
}

/// Why a waiter was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `server.max_waiters` wait already.
    All(usize),
    /// This agent token's `server.max_waiters_per_agent` wait already.
    Agent(usize),
}

impl Waiters {
    pub fn len(&self) -> usize {
        self.count
    }

    /// The approvals someone waits for.
    pub fn ids(&self) -> Vec<ApprovalId> {
        self.by_approval.keys().copied().collect()
    }

    /// Register a waiter for `id`, requested by `agent`; refused when `limit` waiters are
    /// registered in all, or `per_agent` for this agent token.
    pub fn add(
        &mut self,
        id: ApprovalId,
        agent: &str,
        limit: usize,
        per_agent: usize,
    ) -> Result<(u64, oneshot::Receiver<Approval>), Full> {
        let mine = |w: &Self| w.by_agent.get(agent).copied().unwrap_or(0);
        if self.count >= limit || mine(self) >= per_agent {
            self.reap_closed();
            if self.count >= limit {
                return Err(Full::All(limit));
            }
            if mine(self) >= per_agent {
                return Err(Full::Agent(per_agent));
            }
        }
        let agent: std::sync::Arc<str> = match self.by_agent.get_key_value(agent) {
            Some((known, _)) => std::sync::Arc::clone(known),
            None => agent.into(),
        };
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.by_approval.entry(id).or_default().push((
            self.next,
            tx,
            std::sync::Arc::clone(&agent),
        ));
        *self.by_agent.entry(agent).or_insert(0) += 1;
        self.count += 1;
        Ok((self.next, rx))
    }

    /// One fewer waiter for `agent`.
    fn forget(by_agent: &mut HashMap<std::sync::Arc<str>, usize>, agent: &str) {
        if let Some(n) = by_agent.get_mut(agent) {
            *n -= 1;
            if *n == 0 {
                by_agent.remove(agent);
            }
        }
    }

    /// Remove one waiter; true if it was still registered.
    pub fn remove(&mut self, id: ApprovalId, waiter: u64) -> bool {
        let Some(list) = self.by_approval.get_mut(&id) else {
            return false;
        };
        let Some(at) = list.iter().position(|(w, _, _)| *w == waiter) else {
            return false;
        };
        let (_, _, agent) = list.swap_remove(at);
        if list.is_empty() {
            self.by_approval.remove(&id);
        }
        Self::forget(&mut self.by_agent, &agent);
        self.count -= 1;
        true
    }

    /// Whether anyone still waits for `id` (a waiter whose long poll went away does not count).
    pub fn anyone_waits_for(&self, id: ApprovalId) -> bool {
        self.by_approval
            .get(&id)
            .is_some_and(|list| list.iter().any(|(_, tx, _)| !tx.is_closed()))
    }

    /// Hand the ended approval to everyone waiting for it; returns how many were woken.
    pub fn wake(&mut self, approval: &Approval) -> usize {
        let Some(list) = self.by_approval.remove(&approval.id) else {
            return 0;
        };
        self.count -= list.len();
        let woken = list.len();
        for (_, tx, agent) in list {
            Self::forget(&mut self.by_agent, &agent);
            let _ = tx.send(approval.clone());
        }
        woken
    }

    /// Forget waiters whose long poll has already gone away.
    pub fn reap_closed(&mut self) {
        let mut removed = 0;
        let by_agent = &mut self.by_agent;
        self.by_approval.retain(|_, list| {
            list.retain(|(_, tx, agent)| {
                let open = !tx.is_closed();
                if !open {
                    Self::forget(by_agent, agent);
                    removed += 1;
                }
                open
            });
            !list.is_empty()
        });
        self.count -= removed;
    }

    pub fn clear(&mut self) {
        self.by_approval.clear();
        self.by_agent.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_cannot_take_every_waiter() {
        let mut waiters = Waiters::default();
        let id = ApprovalId::new();
        let mut greedy: Vec<_> = (0..3)
            .map(|_| waiters.add(id, "greedy", 10, 3).expect("within its share"))
            .collect();
        assert_eq!(waiters.add(id, "greedy", 10, 3).err(), Some(Full::Agent(3)));
        let other = waiters
            .add(id, "other", 10, 3)
            .expect("another agent still waits");
        assert_eq!(waiters.len(), 4);
        // A share is freed by a removal, or by a long poll that went away (reaped).
        let (first, _) = greedy.remove(0);
        assert!(waiters.remove(id, first));
        let again = waiters
            .add(id, "greedy", 10, 3)
            .expect("freed by the removal");
        greedy.pop(); // its long poll went away
        let reaped = waiters.add(id, "greedy", 10, 3).expect("freed by the reap");
        assert_eq!(waiters.len(), 4);
        assert_eq!(waiters.add(id, "x", 4, 3).err(), Some(Full::All(4)));
        drop((other, again, reaped, greedy));
        assert!(
            waiters.add(id, "x", 4, 3).is_ok(),
            "closed ones are reaped first"
        );
        assert_eq!(waiters.len(), 1);
        assert_eq!(waiters.by_agent.len(), 1, "counts per agent follow");
    }
}
