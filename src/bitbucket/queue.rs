//! The order in which requests waiting on one budget go out (#23's request plan): a
//! change a user made before a check that nothing drifted, that before a health poll;
//! within one priority, first come first served, except that the requests of one place
//! (a repository's listing and then the creates its Webhooks decided from it) keep the
//! place's turn and go back to back, so the listing they were decided from is as young
//! as the budget allows when they go.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a request is for, in the order a budget lets them go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Work a user asked for: a new or edited Webhook, a deletion, a test delivery, a
    /// connection's check (also what nothing marked asks).
    Change,
    /// Periodic: is the hook still as the spec says?
    Drift,
    /// Periodic: delivery statistics.
    Health,
}

/// Who is asking: the priority, and the place whose requests keep one turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub priority: Priority,
    group: Option<u64>,
}

tokio::task_local! {
    static TICKET: Ticket;
}

impl Ticket {
    /// A ticket for the requests about `place` (any value naming it).
    pub fn new(priority: Priority, place: &impl Hash) -> Ticket {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        place.hash(&mut hasher);
        Ticket {
            priority,
            group: Some(hasher.finish()),
        }
    }

    /// The same place at another priority.
    pub fn at(self, priority: Priority) -> Ticket {
        Ticket { priority, ..self }
    }

    /// Runs `work` with the Bitbucket requests it makes queued under this ticket.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        TICKET.scope(self, work).await
    }

    /// The ticket of the work running now; work nobody marked is a change of its own.
    pub fn current() -> Ticket {
        TICKET.try_with(|t| *t).unwrap_or(Ticket {
            priority: Priority::Change,
            group: None,
        })
    }
}

/// How long after a place's request went a new one of the same place keeps its turn: the
/// reconciles that waited for a listing decide and ask to create well within it.
const KEEP_TURN: Duration = Duration::from_secs(5);

/// Order in the queue: priority, then the place's turn, then arrival.
type Key = (Priority, u64, u64);

#[derive(Default)]
struct State {
    arrivals: u64,
    waiting: BTreeSet<Key>,
    places: HashMap<u64, Turn>,
    /// Until when the first in line waits for the bucket to refill; None while requests
    /// go without waiting.
    refill: Option<Instant>,
}

struct Turn {
    turn: u64,
    waiting: usize,
    last_out: Instant,
}

/// The requests waiting on one budget.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    /// Someone left the queue, or the first in line found the bucket empty.
    moved: Notify,
}

/// One request's place in the queue; leaving (granted, given up or dropped) makes way.
pub struct Place<'a> {
    queue: &'a Queue,
    key: Key,
    group: Option<u64>,
    granted: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.state().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the queue under `ticket`.
    pub fn join(&self, ticket: Ticket) -> Place<'_> {
        let now = Instant::now();
        let mut state = self.state();
        state.arrivals += 1;
        let arrival = state.arrivals;
        state
            .places
            .retain(|_, t| t.waiting > 0 || now.duration_since(t.last_out) < KEEP_TURN);
        let turn = match ticket.group {
            Some(group) => {
                let place = state.places.entry(group).or_insert(Turn {
                    turn: arrival,
                    waiting: 0,
                    last_out: now,
                });
                place.waiting += 1;
                place.turn
            }
            None => arrival,
        };
        let key = (ticket.priority, turn, arrival);
        state.waiting.insert(key);
        Place {
            queue: self,
            key,
            group: ticket.group,
            granted: false,
        }
    }

    /// A future that is ready once something moves in the queue after this call.
    pub fn moved(&self) -> tokio::sync::futures::Notified<'_> {
        self.moved.notified()
    }

    /// How many wait ahead of `place`, and until when the first in line waits for a refill.
    pub fn ahead(&self, place: &Place<'_>) -> (usize, Option<Instant>) {
        let state = self.state();
        (state.waiting.range(..place.key).count(), state.refill)
    }

    /// The first in line found the bucket empty until `until`: the others can tell how
    /// long they would wait.
    pub fn refills_at(&self, until: Instant) {
        let changed = {
            let mut state = self.state();
            let changed = state.refill.is_none();
            state.refill = Some(until);
            changed
        };
        if changed {
            self.moved.notify_waiters();
        }
    }
}

impl Place<'_> {
    /// The request goes now.
    pub fn granted(mut self) {
        self.granted = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.queue.state();
            state.waiting.remove(&self.key);
            if self.granted {
                state.refill = None;
            }
            if let Some(turn) = self.group.and_then(|g| state.places.get_mut(&g)) {
                turn.waiting = turn.waiting.saturating_sub(1);
                if self.granted {
                    turn.last_out = Instant::now();
                }
            }
        }
        self.queue.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(queue: &Queue, places: &[Place<'_>]) -> Vec<usize> {
        let mut ahead: Vec<(usize, usize)> = places
            .iter()
            .enumerate()
            .map(|(i, p)| (queue.ahead(p).0, i))
            .collect();
        ahead.sort();
        ahead.into_iter().map(|(_, i)| i).collect()
    }

    #[test]
    fn changes_go_first_and_a_place_keeps_its_turn() {
        let queue = Queue::default();
        let (a, b) = ("acme/a", "acme/b");
        let places = vec![
            queue.join(Ticket::new(Priority::Health, &a)),
            queue.join(Ticket::new(Priority::Drift, &b)),
            queue.join(Ticket::new(Priority::Change, &a)),
            queue.join(Ticket::new(Priority::Change, &b)),
            queue.join(Ticket::current()),
            queue.join(Ticket::new(Priority::Change, &a)),
        ];
        // a's second change keeps a's turn, ahead of b and the unmarked request.
        assert_eq!(order(&queue, &places), [2, 5, 3, 4, 1, 0]);
        assert_eq!(queue.len(), 6);
    }

    #[test]
    fn a_place_keeps_its_turn_a_moment_after_its_request_went() {
        let queue = Queue::default();
        let (a, b) = ("acme/a", "acme/b");
        let listing = queue.join(Ticket::new(Priority::Change, &a));
        let other = queue.join(Ticket::new(Priority::Change, &b));
        listing.granted();
        // The creates decided from a's listing join after b, and still go before it.
        let create = queue.join(Ticket::new(Priority::Change, &a));
        assert_eq!(queue.ahead(&create).0, 0);
        assert_eq!(queue.ahead(&other).0, 1);
        drop(create);
        drop(other);
        assert!(queue.is_empty());
    }

    #[test]
    fn the_first_in_line_tells_when_the_bucket_refills() {
        let queue = Queue::default();
        let first = queue.join(Ticket::current());
        let second = queue.join(Ticket::current());
        assert_eq!(queue.ahead(&second), (1, None));
        let at = Instant::now() + Duration::from_secs(4);
        queue.refills_at(at);
        assert_eq!(queue.ahead(&second), (1, Some(at)));
        first.granted();
        assert_eq!(queue.ahead(&second), (0, None));
    }
}
