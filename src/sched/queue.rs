//! A model's waiting requests: strict arrival order (`fifo`), or ten priority levels (9 first)
//! with round robin across keys inside a level (`priority`), so one busy key cannot starve another.

use super::store::StateUnavailable;
use super::Ask;
use crate::config::models::Scheduling;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::oneshot;

/// One waiting request.
pub struct Waiter {
    pub seq: u64,
    pub priority: u8,
    pub key: Option<Arc<str>>,
    pub candidates: Vec<usize>,
    pub ask: Arc<Ask>,
    pub tx: oneshot::Sender<Result<usize, StateUnavailable>>,
}

#[derive(Default)]
struct Level {
    /// Keys with waiting requests, in round-robin order.
    order: VecDeque<Option<Arc<str>>>,
    per_key: HashMap<Option<Arc<str>>, VecDeque<Waiter>>,
}

pub struct Queue {
    levels: Vec<Level>,
    /// Where each waiting request is: seq → (level, key).
    index: HashMap<u64, (u8, Option<Arc<str>>)>,
    next_seq: u64,
    /// Whether a dispatcher task is running for this queue.
    pub dispatching: bool,
}

impl Queue {
    pub fn new(scheduling: Scheduling) -> Queue {
        let levels = match scheduling {
            Scheduling::Fifo => 1,
            Scheduling::Priority => 10,
        };
        Queue {
            levels: (0..levels).map(|_| Level::default()).collect(),
            index: HashMap::new(),
            next_seq: 1,
            dispatching: false,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add a waiter; returns its sequence number.
    pub fn push(&mut self, mut w: Waiter) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        w.seq = seq;
        let level = (w.priority as usize).min(self.levels.len() - 1);
        let key = w.key.clone();
        let l = &mut self.levels[level];
        let q = l.per_key.entry(key.clone()).or_default();
        if q.is_empty() {
            l.order.push_back(key.clone());
        }
        q.push_back(w);
        self.index.insert(seq, (level as u8, key));
        seq
    }

    /// The request to admit next.
    pub fn peek(&self) -> Option<&Waiter> {
        let l = self.levels.iter().rev().find(|l| !l.order.is_empty())?;
        let key = l.order.front()?;
        l.per_key.get(key)?.front()
    }

    /// Take out a waiter that is being admitted: its key goes to the back of its level's rotation.
    pub fn admit(&mut self, seq: u64) -> Option<Waiter> {
        self.take(seq, true)
    }

    /// Take out a waiter that stopped waiting (timed out, client gone): the rotation stays.
    pub fn remove(&mut self, seq: u64) -> Option<Waiter> {
        self.take(seq, false)
    }

    fn take(&mut self, seq: u64, served: bool) -> Option<Waiter> {
        let (level, key) = self.index.remove(&seq)?;
        let l = &mut self.levels[level as usize];
        let q = l.per_key.get_mut(&key)?;
        let pos = q.iter().position(|w| w.seq == seq)?;
        let w = q.remove(pos);
        let now_empty = q.is_empty();
        let was_front_key = l.order.front() == Some(&key);
        if now_empty {
            l.per_key.remove(&key);
            l.order.retain(|k| k != &key);
        } else if served && was_front_key {
            // Served the head of the current key: next key's turn.
            l.order.rotate_left(1);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(
        priority: u8,
        key: &str,
    ) -> (Waiter, oneshot::Receiver<Result<usize, StateUnavailable>>) {
        let (tx, rx) = oneshot::channel();
        (
            Waiter {
                seq: 0,
                priority,
                key: Some(key.into()),
                candidates: vec![0],
                ask: Arc::new(Ask::default()),
                tx,
            },
            rx,
        )
    }

    fn drain(q: &mut Queue) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(seq) = q.peek().map(|w| w.seq) {
            q.admit(seq);
            out.push(seq);
        }
        out
    }

    #[test]
    fn fifo_is_arrival_order() {
        let mut q = Queue::new(Scheduling::Fifo);
        let mut rxs = Vec::new();
        for (p, k) in [(9, "a"), (0, "b"), (5, "a")] {
            let (mut w, rx) = waiter(p, k);
            w.priority = 0;
            w.key = None;
            q.push(w);
            rxs.push(rx);
        }
        assert_eq!(drain(&mut q), vec![1, 2, 3]);
    }

    #[test]
    fn priority_first_then_round_robin_across_keys() {
        let mut q = Queue::new(Scheduling::Priority);
        let mut rxs = Vec::new();
        // seq: 1 a0, 2 a0, 3 a0, 4 b0, 5 b0, 6 c9
        for (p, k) in [(0, "a"), (0, "a"), (0, "a"), (0, "b"), (0, "b"), (9, "c")] {
            let (w, rx) = waiter(p, k);
            q.push(w);
            rxs.push(rx);
        }
        assert_eq!(drain(&mut q), vec![6, 1, 4, 2, 5, 3]);
    }

    #[test]
    fn leaving_keeps_the_rotation() {
        let mut q = Queue::new(Scheduling::Priority);
        let mut rxs = Vec::new();
        for (p, k) in [(0, "a"), (0, "b"), (0, "a")] {
            let (w, rx) = waiter(p, k);
            q.push(w);
            rxs.push(rx);
        }
        // The second of a's requests leaves (timeout) before its turn.
        assert!(q.remove(3).is_some());
        assert_eq!(q.len(), 2);
        assert_eq!(drain(&mut q), vec![1, 2]);
        assert!(q.is_empty());
    }
}
