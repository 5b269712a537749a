//! Target `push_queue`: a [`PushQueue`] driven by an arbitrary sequence of pull requests
//! (for local and not-yet-local objects), objects becoming local, chunk send results (good,
//! failed, and answers for chunks that are not in flight), node deaths and time, with a
//! driver that drains `poll_send` after every input as the transfer service does. The
//! configuration (chunk size, in-flight cap, push timeout) comes from the input too.
//!
//! Invariants checked after every input:
//! - **in flight**: `bytes_in_flight` is the sum of the lengths of the chunks handed out and
//!   not answered; it stays under the cap unless a single chunk is in flight (a chunk
//!   larger than the cap still moves);
//! - **chunks**: a chunk is never handed out twice while in flight; each push hands out
//!   indexes 0, 1, 2, … in order, with the offset and length of the chunk layout;
//! - **answers**: an answer for a chunk in flight is accepted, any other is
//!   `UnknownChunk`; `PushDone` comes only when none of that push's chunks is in flight;
//! - **dead nodes**: nothing is handed out to a node after its death, and requests for it
//!   are refused;
//! - **the end**: once every chunk is answered, every push has ended; once the timeout has
//!   passed and every node is dead, no request waits and no timer is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use super::ids::{node, object};
use crate::ids::{NodeId, ObjectId};
use crate::logic::transfer::push::{PushAction, PushConfig, PushError, PushQueue};

const NODES: u8 = 4;
const OBJECTS: u8 = 6;

#[derive(Debug, Arbitrary)]
struct Config {
    chunk_size: u8,
    cap: u8,
    timeout_ms: Option<u8>,
}

#[derive(Debug, Arbitrary)]
enum Event {
    Request { to: u8, id: u8, size: u8 },
    Missing { to: u8, id: u8 },
    Local { id: u8, size: u8 },
    Sent { chunk: u8, ok: bool },
    Stray { to: u8, id: u8, index: u8, ok: bool },
    NodeDead { node: u8 },
    Advance { ms: u8 },
}

type Key = (NodeId, ObjectId, u32);

struct Driver {
    q: PushQueue,
    now: Instant,
    cap: u64,
    in_flight: BTreeMap<Key, u64>,
    /// Next index each live push must hand out.
    next: BTreeMap<(NodeId, ObjectId), u32>,
    dead: BTreeSet<NodeId>,
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(c), Ok(events)) = (Config::arbitrary(&mut u), Vec::<Event>::arbitrary(&mut u)) else { return };
    let cap = u64::from(c.cap);
    let config = PushConfig {
        chunk_size: u64::from(c.chunk_size.max(1)),
        max_bytes_in_flight: cap,
        push_timeout: c.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
    };
    let q = PushQueue::new(config).expect("positive chunk size");
    let mut d = Driver {
        q,
        now: Instant::now(),
        cap,
        in_flight: BTreeMap::new(),
        next: BTreeMap::new(),
        dead: BTreeSet::new(),
    };
    for e in events {
        d.step(e);
        d.drain();
        d.check();
    }
    while let Some((&(to, id, index), _)) = d.in_flight.iter().next() {
        d.answer(to, id, index, true);
        d.drain();
        d.check();
    }
    assert_eq!(d.q.num_pushes(), 0, "pushes left once every chunk was answered");
    d.now += Duration::from_secs(1);
    d.q.handle_timeout(d.now);
    for n in 0..NODES {
        d.q.handle_node_dead(node(n));
    }
    d.drain();
    d.check();
    assert_eq!((d.q.num_pushes(), d.q.num_waiting(), d.q.bytes_in_flight()), (0, 0, 0));
    assert_eq!(d.q.poll_timeout(), None, "a timer outlived every request");
}

impl Driver {
    fn step(&mut self, e: Event) {
        match e {
            Event::Request { to, id, size } => {
                let (to, id) = (node(to % NODES), object(id % OBJECTS));
                let res = self.q.handle_push_request(to, id, u64::from(size));
                assert_eq!(matches!(res, Err(PushError::NodeDead(_))), self.dead.contains(&to), "{res:?}");
            }
            Event::Missing { to, id } => self.q.handle_object_missing(self.now, node(to % NODES), object(id % OBJECTS)),
            Event::Local { id, size } => {
                // Small sizes always lay out; the result only says so.
                assert!(self.q.handle_object_local(object(id % OBJECTS), u64::from(size)).is_ok());
            }
            Event::Sent { chunk, ok } => {
                let n = self.in_flight.len();
                if n > 0 {
                    let (&(to, id, index), _) = self.in_flight.iter().nth(usize::from(chunk) % n).expect("in range");
                    self.answer(to, id, index, ok);
                }
            }
            Event::Stray { to, id, index, ok } => {
                let key = (node(to % NODES), object(id % OBJECTS), u32::from(index % 8));
                if !self.in_flight.contains_key(&key) {
                    let res = self.q.handle_chunk_sent(key.0, key.1, key.2, ok);
                    assert!(matches!(res, Err(PushError::UnknownChunk { .. })), "stray answer accepted: {res:?}");
                }
            }
            Event::NodeDead { node: n } => {
                let n = node(n % NODES);
                self.dead.insert(n);
                self.in_flight.retain(|(to, _, _), _| *to != n);
                self.next.retain(|(to, _), _| *to != n);
                self.q.handle_node_dead(n);
            }
            Event::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.q.handle_timeout(self.now);
                assert!(self.q.poll_timeout().is_none_or(|t| t > self.now), "a due timer did not fire");
            }
        }
    }

    fn answer(&mut self, to: NodeId, id: ObjectId, index: u32, ok: bool) {
        self.in_flight.remove(&(to, id, index));
        let res = self.q.handle_chunk_sent(to, id, index, ok);
        assert!(res.is_ok(), "answer for a chunk in flight refused: {res:?}");
    }

    fn drain(&mut self) {
        while let Some(c) = self.q.poll_send() {
            assert!(!self.dead.contains(&c.to), "chunk handed out to dead node {}", c.to);
            let key = (c.to, c.id, c.index);
            assert!(self.in_flight.insert(key, c.len).is_none(), "chunk {key:?} handed out twice");
            let next = self.next.entry((c.to, c.id)).or_insert(0);
            // A new push (after one ended) starts again at 0.
            assert!(c.index == *next || c.index == 0, "chunk {} handed out, {} expected", c.index, next);
            *next = c.index + 1;
            let offset = u64::from(c.index) * c.chunk_size;
            assert_eq!(c.offset, offset, "chunk offset off the layout");
            assert_eq!(c.len, c.chunk_size.min(c.total_size - offset), "chunk length off the layout");
        }
        while let Some(a) = self.q.poll_action() {
            if let PushAction::PushDone { to, id } = a {
                assert!(!self.in_flight.keys().any(|k| k.0 == to && k.1 == id), "PushDone with chunks in flight");
                assert!(!self.q.is_pushing(to, id), "PushDone for a push that goes on");
            }
        }
    }

    fn check(&self) {
        let bytes: u64 = self.in_flight.values().sum();
        assert_eq!(self.q.bytes_in_flight(), bytes, "bytes_in_flight differs from the chunks in flight");
        let nonempty = self.in_flight.values().filter(|l| **l > 0).count();
        assert!(bytes <= self.cap || nonempty == 1, "{bytes} bytes in flight over a cap of {}", self.cap);
    }
}
