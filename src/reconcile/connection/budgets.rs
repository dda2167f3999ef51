//! Request budgets as Bitbucket counts them: one per server and per whom it counts (a
//! Basic user, a Bearer token), shared by the connections using that credential, at the
//! smallest of their `rateLimit`s. A client rebuild keeps its budget (and any pause).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::bitbucket::Budget;
use crate::bitbucket::budget::{Health, Purpose, Reported};
use crate::identity::{BudgetKey, ConnectionId};

/// What a connection's budget allows, for its status.
#[derive(Debug)]
pub struct Allowance {
    pub per_hour: u32,
    /// How many connection objects use it.
    pub shared_by: usize,
    pub reported: Vec<Reported>,
    /// Requests taken over the last hour, by purpose.
    pub spent: Vec<(Purpose, u64)>,
    /// Requests waiting for their turn now.
    pub queued: usize,
    /// How often each repository is listed by periodic work (set by the reconciler).
    pub resync_every: Option<std::time::Duration>,
}

pub struct Budgets {
    inner: Mutex<Inner>,
    /// Budgets whose pause just started, or whose Bitbucket started failing or answers
    /// again, for the connection controllers.
    paused: broadcast::Sender<BudgetKey>,
    /// Budgets whose Bitbucket answers again after failing, for the Webhook controllers.
    answering: broadcast::Sender<BudgetKey>,
}

#[derive(Default)]
struct Inner {
    budgets: HashMap<BudgetKey, Arc<Budget>>,
    /// The budget each connection uses, once a client was built for it.
    of: HashMap<ConnectionId, BudgetKey>,
    /// The requests per hour each connection asks for (its rateLimit).
    asks: HashMap<ConnectionId, u32>,
}

impl Inner {
    fn smallest_ask(&self, key: &BudgetKey) -> Option<u32> {
        self.of
            .iter()
            .filter(|(_, k)| *k == key)
            .filter_map(|(c, _)| self.asks.get(c))
            .min()
            .copied()
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            inner: Mutex::default(),
            paused: broadcast::channel(64).0,
            answering: broadcast::channel(64).0,
        }
    }
}

impl Budgets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The budget `key` for `connection`, which asks for `ask` requests per hour: made on
    /// first use (its pauses and outages announced), its allowance the smallest ask.
    pub fn join(&self, connection: &ConnectionId, key: &BudgetKey, ask: u32) -> Arc<Budget> {
        let mut inner = self.lock();
        let budget = inner
            .budgets
            .entry(key.clone())
            .or_insert_with(|| self.announced(key, ask))
            .clone();
        inner.of.insert(connection.clone(), key.clone());
        inner.asks.insert(connection.clone(), ask);
        budget.set_allowance(inner.smallest_ask(key).unwrap_or(ask));
        budget
    }

    fn announced(&self, key: &BudgetKey, ask: u32) -> Arc<Budget> {
        let budget = Arc::new(Budget::per_hour(ask));
        let (paused, k) = (self.paused.clone(), key.clone());
        budget.set_on_pause(Arc::new(move || {
            let _ = paused.send(k.clone());
        }));
        let (paused, k) = (self.paused.clone(), key.clone());
        budget.set_on_queue(Arc::new(move || {
            let _ = paused.send(k.clone());
        }));
        let (paused, answering, k) = (self.paused.clone(), self.answering.clone(), key.clone());
        budget.set_on_outage(Arc::new(move |health| {
            // The connection shows it either way; waiting Webhooks go on answers.
            let _ = paused.send(k.clone());
            if health == Health::Answering {
                let _ = answering.send(k.clone());
            }
        }));
        budget
    }

    /// The budget a connection uses, once a client was built for it.
    pub fn of(&self, connection: &ConnectionId) -> Option<Arc<Budget>> {
        let inner = self.lock();
        inner.budgets.get(inner.of.get(connection)?).cloned()
    }

    /// The key of the budget a connection uses.
    pub fn key_of(&self, connection: &ConnectionId) -> Option<BudgetKey> {
        self.lock().of.get(connection).cloned()
    }

    /// A connection is gone: its rateLimit no longer counts toward its budget's.
    pub fn forget(&self, connection: &ConnectionId) {
        let mut inner = self.lock();
        inner.asks.remove(connection);
        if let Some(key) = inner.of.remove(connection)
            && let Some(smallest) = inner.smallest_ask(&key)
            && let Some(budget) = inner.budgets.get(&key)
        {
            budget.set_allowance(smallest);
        }
    }

    /// What a connection's budget allows and what Bitbucket reported.
    pub fn allowance(&self, connection: &ConnectionId) -> Option<Allowance> {
        let inner = self.lock();
        let key = inner.of.get(connection)?;
        let budget = inner.budgets.get(key)?;
        Some(Allowance {
            per_hour: budget.limit(),
            shared_by: inner.of.values().filter(|k| *k == key).count(),
            reported: budget.reported(),
            spent: budget.spent_last_hour(),
            queued: budget.queued(),
            resync_every: None,
        })
    }

    /// The connections that use a budget.
    pub fn connections_on(&self, key: &BudgetKey) -> Vec<ConnectionId> {
        let inner = self.lock();
        let mut on: Vec<_> = inner
            .of
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(c, _)| c.clone())
            .collect();
        on.sort();
        on
    }

    /// Budgets, as their pause after a Bitbucket 429 starts or their outage starts or ends.
    pub fn pauses(&self) -> broadcast::Receiver<BudgetKey> {
        self.paused.subscribe()
    }

    /// Budgets whose Bitbucket answers again after failing.
    pub fn answering(&self) -> broadcast::Receiver<BudgetKey> {
        self.answering.subscribe()
    }

    /// Has the Webhooks waiting on `key` retried now (the path of an answer after an
    /// outage).
    pub fn announce_answering(&self, key: &BudgetKey) {
        let _ = self.answering.send(key.clone());
    }

    /// Has the connection controllers reconcile every connection on `key`.
    pub fn announce_to_connections(&self, key: &BudgetKey) {
        let _ = self.paused.send(key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnectionKind;
    use crate::bitbucket::Credentials;

    fn id(name: &str) -> ConnectionId {
        ConnectionId::new(ConnectionKind::BitbucketConnection, Some("team"), name)
    }

    fn key(token: &str) -> BudgetKey {
        let data = [("token".to_owned(), k8s_openapi::ByteString(token.into()))];
        let credentials = Credentials::from_secret(
            crate::api::AuthType::Bearer,
            "team/token",
            &data.into_iter().collect(),
        )
        .expect("credentials");
        BudgetKey::new(None, &credentials)
    }

    #[test]
    fn connections_sharing_a_credential_share_the_smallest_ask_until_one_goes() {
        let budgets = Budgets::default();
        let shared = budgets.join(&id("a"), &key("t1"), 900);
        let same = budgets.join(&id("b"), &key("t1"), 300);
        assert!(Arc::ptr_eq(&shared, &same));
        let apart = budgets.join(&id("c"), &key("t2"), 300);
        assert!(!Arc::ptr_eq(&shared, &apart));
        let allowance = budgets.allowance(&id("a")).expect("allowance");
        assert_eq!((allowance.per_hour, allowance.shared_by), (300, 2));
        assert_eq!(budgets.connections_on(&key("t1")), [id("a"), id("b")]);
        budgets.forget(&id("b"));
        assert_eq!(budgets.allowance(&id("a")).map(|a| a.per_hour), Some(900));
        assert!(budgets.of(&id("b")).is_none());
    }
}
