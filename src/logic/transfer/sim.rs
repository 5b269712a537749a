//! Deterministic multi-node simulation of [`PullQueue`] and [`PushQueue`] (tests only).
//!
//! Modelled on quinn's `Pair`: a few nodes, each with a pull queue, a push queue, a store of
//! sealed objects and the unsealed buffers its pulls allocated; a virtual clock; one ordered
//! queue of in-flight messages with per-message latency and jitter (so chunks reorder); and
//! faults drawn from a seeded RNG: silently lost chunks, connection resets, corrupted
//! payloads, duplicated pull requests and a node killed mid-transfer. The driver code plays
//! the IO layer exactly as the module docs of `pull` and `push` prescribe (claim a chunk,
//! write it into the buffer, verify CRC32C, report it), so byte-level corruption really
//! lands in the buffer and must be overwritten before `Seal`.
//!
//! Every scenario runs under several seeds; a failing run prints its seed, and
//! `SIM_SEED=<n> cargo test <name>` replays just that seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::chunks::ChunkHeader;
use super::pull::{BundleId, ChunkClaim, ChunkOutcome, PullAction, PullConfig, PullFailure, PullPriority, PullQueue};
use super::push::{PushConfig, PushQueue, PushStart};
use crate::ids::{NodeId, ObjectId};

const CHUNK: u64 = 1024;
const LATENCY: Duration = Duration::from_millis(1);
const DETECT_DEATH: Duration = Duration::from_millis(50);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pull_config() -> PullConfig {
    PullConfig {
        chunk_size: CHUNK,
        pull_retry: Duration::from_secs(1),
        max_backoff_exponent: 2,
        fetch_timeout: Duration::from_secs(30),
    }
}

fn push_config() -> PushConfig {
    PushConfig { chunk_size: CHUNK, max_bytes_in_flight: 4 * CHUNK, push_timeout: Some(Duration::from_secs(10)) }
}

/// CRC32C (Castagnoli), bitwise; what the IO layer computes on both ends.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// Fault rates and one-off faults.
#[derive(Debug, Default, Clone)]
struct Faults {
    /// Chunk silently lost (sender sees success).
    drop: f64,
    /// Connection reset while sending a chunk (both ends see the failure).
    reset: f64,
    /// Payload bit flipped on the wire.
    corrupt: f64,
    /// Extra random delay per message, for reordering.
    jitter_ms: u64,
    /// Every pull request is delivered twice.
    duplicate_pulls: bool,
    /// Corrupt the first copy of this chunk that is sent.
    corrupt_once: Option<(ObjectId, u32)>,
    /// Kill the sender once this node has accepted this many chunks of the object from it.
    kill_source: Option<(usize, ObjectId, u32)>,
}

#[derive(Debug)]
enum Msg {
    Pull {
        from: NodeId,
        id: ObjectId,
    },
    Chunk {
        from: NodeId,
        id: ObjectId,
        header: ChunkHeader,
        data: Vec<u8>,
        crc: u32,
    },
    Ack {
        to: NodeId,
        id: ObjectId,
        index: u32,
        ok: bool,
    },
    Reset {
        from: NodeId,
        id: ObjectId,
    },
    /// The directory's answer; `snapshot` overrides the live directory (for staged tests).
    Locations {
        id: ObjectId,
        snapshot: Option<Vec<NodeId>>,
    },
    NodeDead {
        node: NodeId,
    },
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    alive: bool,
    pull: PullQueue,
    push: PushQueue,
    store: BTreeMap<ObjectId, Vec<u8>>,
    buffers: BTreeMap<ObjectId, Vec<u8>>,
    /// Times each chunk was accepted into a reassembly.
    accepted: BTreeMap<(ObjectId, u32), u32>,
    accepted_from: BTreeMap<(ObjectId, NodeId), u32>,
    pulls_sent: Vec<(NodeId, ObjectId)>,
    corrupt_seen: u32,
    push_starts: u32,
    chunks_sent: BTreeMap<(NodeId, ObjectId, u32), u32>,
    failed: Vec<(ObjectId, PullFailure)>,
    completed: BTreeSet<BundleId>,
}

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    queue: BTreeMap<(Instant, u64), (usize, Msg)>,
    seq: u64,
    /// Object directory: size and holders.
    directory: BTreeMap<ObjectId, (u64, BTreeSet<NodeId>)>,
    watchers: BTreeMap<ObjectId, BTreeSet<usize>>,
    faults: Faults,
}

impl Sim {
    fn new(seed: u64, n: usize, faults: Faults) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let t0 = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let id = NodeId([i as u8 + 1; NodeId::LEN]);
                let mut pull = PullQueue::new(id, pull_config(), rng.fork()).unwrap();
                pull.handle_budget(t0, u64::MAX);
                let push = PushQueue::new(push_config()).unwrap();
                Node {
                    id,
                    alive: true,
                    pull,
                    push,
                    store: BTreeMap::new(),
                    buffers: BTreeMap::new(),
                    accepted: BTreeMap::new(),
                    accepted_from: BTreeMap::new(),
                    pulls_sent: Vec::new(),
                    corrupt_seen: 0,
                    push_starts: 0,
                    chunks_sent: BTreeMap::new(),
                    failed: Vec::new(),
                    completed: BTreeSet::new(),
                }
            })
            .collect();
        Self {
            seed,
            rng,
            t0,
            now: t0,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            directory: BTreeMap::new(),
            watchers: BTreeMap::new(),
            faults,
        }
    }

    fn index_of(&self, node: NodeId) -> usize {
        self.nodes.iter().position(|n| n.id == node).expect("known node")
    }

    /// Stores random bytes as object `id` on node `at`; returns them.
    fn put(&mut self, at: usize, id: ObjectId, size: usize) -> Vec<u8> {
        let bytes: Vec<u8> = (0..size).map(|_| self.rng.u8(..)).collect();
        self.put_copy(at, id, &bytes);
        bytes
    }

    /// Stores a copy of `bytes` as object `id` on node `at`.
    fn put_copy(&mut self, at: usize, id: ObjectId, bytes: &[u8]) {
        self.nodes[at].store.insert(id, bytes.to_vec());
        let entry = self.directory.entry(id).or_insert((bytes.len() as u64, BTreeSet::new()));
        entry.1.insert(self.nodes[at].id);
    }

    /// Asserts node `at` holds exactly `expected` as `id`.
    fn assert_holds(&self, at: usize, id: ObjectId, expected: &[u8]) {
        let got =
            self.nodes[at].store.get(&id).unwrap_or_else(|| panic!("node {at} lacks {id:?} (seed {})", self.seed));
        assert_eq!(got.len(), expected.len(), "size of {id:?} on node {at} (seed {})", self.seed);
        if let Some(at_byte) = got.iter().zip(expected).position(|(a, b)| a != b) {
            panic!("{id:?} on node {at} differs at byte {at_byte} (seed {})", self.seed);
        }
    }

    /// Node `at` pulls `ids` as one bundle; the directory answers after a latency.
    fn pull(&mut self, at: usize, bundle: u64, priority: PullPriority, ids: Vec<ObjectId>) {
        for &id in &ids {
            self.watchers.entry(id).or_default().insert(at);
            self.send(at, Msg::Locations { id, snapshot: None });
        }
        self.nodes[at].pull.handle_pull(self.now, BundleId(bundle), priority, ids).unwrap();
    }

    fn send(&mut self, to: usize, msg: Msg) {
        let jitter = if self.faults.jitter_ms > 0 { self.rng.u64(0..=self.faults.jitter_ms) } else { 0 };
        self.send_at(self.now + LATENCY + ms(jitter), to, msg);
    }

    fn send_at(&mut self, at: Instant, to: usize, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (to, msg));
    }

    /// Drains every node's outputs until nothing new comes out.
    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].alive {
                    continue;
                }
                while let Some(a) = self.nodes[i].pull.poll_action() {
                    progressed = true;
                    self.perform_pull_action(i, a);
                }
                while let Some(c) = self.nodes[i].push.poll_send() {
                    progressed = true;
                    self.send_chunk(i, c);
                }
                while self.nodes[i].push.poll_action().is_some() {
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn perform_pull_action(&mut self, i: usize, action: PullAction) {
        let me = self.nodes[i].id;
        match action {
            PullAction::SendPull { node, id } => {
                self.nodes[i].pulls_sent.push((node, id));
                let to = self.index_of(node);
                let copies = if self.faults.duplicate_pulls { 2 } else { 1 };
                for _ in 0..copies {
                    self.send(to, Msg::Pull { from: me, id });
                }
            }
            PullAction::AllocateBuffer { id, size } => {
                let fresh = self.nodes[i].buffers.insert(id, vec![0; size as usize]).is_none();
                assert!(fresh, "AllocateBuffer twice without AbortBuffer (seed {})", self.seed);
            }
            PullAction::AbortBuffer { id } => {
                self.nodes[i].buffers.remove(&id);
            }
            PullAction::Seal { id } => {
                let bytes = self.nodes[i].buffers.remove(&id).expect("Seal of an allocated buffer");
                let size = bytes.len() as u64;
                self.nodes[i].store.insert(id, bytes);
                self.directory.get_mut(&id).expect("sealed objects are known").1.insert(me);
                self.nodes[i].pull.handle_object_local(self.now, id);
                self.nodes[i].push.handle_object_local(id, size).unwrap();
            }
            PullAction::Failed { id, reason } => self.nodes[i].failed.push((id, reason)),
            PullAction::Completed { bundle_id } => {
                self.nodes[i].completed.insert(bundle_id);
            }
        }
    }

    /// The sender's IO layer: read the chunk from the store and put it on the wire.
    fn send_chunk(&mut self, i: usize, c: super::push::SendChunk) {
        let me = self.nodes[i].id;
        *self.nodes[i].chunks_sent.entry((c.to, c.id, c.index)).or_default() += 1;
        let to = self.index_of(c.to);
        let (off, len) = (c.offset as usize, c.len as usize);
        let mut data = self.nodes[i].store[&c.id][off..off + len].to_vec();
        let crc = crc32c(&data);
        let header = ChunkHeader { index: c.index, total_size: c.total_size, len: c.len };
        let roll = self.rng.f64();
        let (f_drop, f_reset, f_corrupt) = (self.faults.drop, self.faults.reset, self.faults.corrupt);
        if roll < f_drop {
            self.send_at(self.now + 2 * LATENCY, i, Msg::Ack { to: c.to, id: c.id, index: c.index, ok: true });
            return;
        }
        if roll < f_drop + f_reset {
            self.send_at(self.now + LATENCY, i, Msg::Ack { to: c.to, id: c.id, index: c.index, ok: false });
            self.send_at(self.now + LATENCY, to, Msg::Reset { from: me, id: c.id });
            return;
        }
        let once = self.faults.corrupt_once == Some((c.id, c.index));
        if (once || roll < f_drop + f_reset + f_corrupt) && !data.is_empty() {
            self.faults.corrupt_once = None;
            let at = self.rng.usize(..data.len());
            data[at] ^= 0x10;
        }
        self.send(to, Msg::Chunk { from: me, id: c.id, header, data, crc });
    }

    fn deliver(&mut self, to: usize, msg: Msg) {
        let now = self.now;
        let sender_alive = |s: &Self, n: NodeId| s.nodes[s.index_of(n)].alive;
        match msg {
            Msg::Chunk { from, .. } if !sender_alive(self, from) => {}
            Msg::Chunk { from, id, header, .. } if !self.nodes[to].alive => {
                let back = self.index_of(from);
                let ack = Msg::Ack { to: self.nodes[to].id, id, index: header.index, ok: false };
                self.send(back, ack);
            }
            _ if !self.nodes[to].alive => {}
            Msg::Pull { from, id } => {
                let node = &mut self.nodes[to];
                match node.store.get(&id) {
                    Some(bytes) => {
                        let size = bytes.len() as u64;
                        if node.push.handle_push_request(from, id, size) == Ok(PushStart::Started) {
                            node.push_starts += 1;
                        }
                    }
                    None => node.push.handle_object_missing(now, from, id),
                }
            }
            Msg::Chunk { from, id, header, data, crc } => self.receive_chunk(to, from, id, header, data, crc),
            Msg::Ack { to: dest, id, index, ok } => {
                // Late answers after a node death are expected to be unknown.
                let _ = self.nodes[to].push.handle_chunk_sent(dest, id, index, ok);
            }
            Msg::Reset { from, id } => self.nodes[to].pull.handle_transfer_failed(now, id, from),
            Msg::Locations { id, snapshot } => {
                let (mut nodes, size) = match self.directory.get(&id) {
                    Some((size, holders)) => (holders.iter().copied().collect(), Some(*size)),
                    None => (Vec::new(), None),
                };
                if let Some(snapshot) = snapshot {
                    nodes = snapshot;
                }
                self.nodes[to].pull.handle_locations(now, id, nodes, size);
            }
            Msg::NodeDead { node } => {
                self.nodes[to].pull.handle_node_dead(now, node);
                self.nodes[to].push.handle_node_dead(node);
            }
        }
    }

    /// The receiver's IO layer: claim, write into the buffer, verify, report.
    fn receive_chunk(&mut self, to: usize, from: NodeId, id: ObjectId, header: ChunkHeader, data: Vec<u8>, crc: u32) {
        let now = self.now;
        let me = self.nodes[to].id;
        let back = self.index_of(from);
        self.send(back, Msg::Ack { to: me, id, index: header.index, ok: true });
        let node = &mut self.nodes[to];
        let Ok(ChunkClaim::Write { offset, len }) = node.pull.handle_chunk_header(id, from, &header) else {
            return;
        };
        let buffer = node.buffers.get_mut(&id).expect("a claimed chunk has a buffer");
        buffer[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        let crc_ok = crc32c(&data) == crc;
        let outcome = node.pull.handle_chunk(now, id, from, header.index, crc_ok).unwrap();
        if outcome == ChunkOutcome::Corrupt {
            node.corrupt_seen += 1;
        }
        if matches!(outcome, ChunkOutcome::Accepted | ChunkOutcome::Completed) {
            *node.accepted.entry((id, header.index)).or_default() += 1;
            let n = node.accepted_from.entry((id, from)).or_default();
            *n += 1;
            if self.faults.kill_source == Some((to, id, *n)) {
                self.faults.kill_source = None;
                self.kill(back);
            }
        }
    }

    /// Kills node `i`: its connections drop at once, the cluster notices after a delay.
    fn kill(&mut self, i: usize) {
        let dead = self.nodes[i].id;
        self.nodes[i].alive = false;
        for (id, (_, holders)) in self.directory.iter_mut() {
            if holders.remove(&dead) {
                for &w in self.watchers.get(id).into_iter().flatten() {
                    self.seq += 1;
                    self.queue
                        .insert((self.now + DETECT_DEATH, self.seq), (w, Msg::Locations { id: *id, snapshot: None }));
                }
            }
        }
        for j in 0..self.nodes.len() {
            if j == i || !self.nodes[j].alive {
                continue;
            }
            let streaming: Vec<ObjectId> =
                self.directory.keys().copied().filter(|id| self.nodes[j].pull.wants_chunk(id)).collect();
            for id in streaming {
                self.send_at(self.now + LATENCY, j, Msg::Reset { from: dead, id });
            }
            self.send_at(self.now + DETECT_DEATH, j, Msg::NodeDead { node: dead });
        }
    }

    /// One step: flush outputs, then jump to the next message or timer and process it.
    fn step(&mut self) -> bool {
        self.flush();
        let msg_at = self.queue.first_key_value().map(|((t, _), _)| *t);
        let timer_at = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(|n| [n.pull.poll_timeout(), n.push.poll_timeout()])
            .flatten()
            .min();
        let at = match (msg_at, timer_at) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(at);
        if timer_at == Some(at) {
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                if n.pull.poll_timeout().is_some_and(|t| t <= at) {
                    n.pull.handle_timeout(at);
                }
                if n.push.poll_timeout().is_some_and(|t| t <= at) {
                    n.push.handle_timeout(at);
                }
            }
        } else if let Some((_, (to, msg))) = self.queue.pop_first() {
            self.deliver(to, msg);
        }
        true
    }

    /// Steps until `done` holds; panics (with the seed) on a stall or livelock.
    fn drive_until(&mut self, max_steps: usize, done: impl Fn(&Self) -> bool) {
        for _ in 0..max_steps {
            self.flush();
            if done(self) {
                return;
            }
            assert!(self.step(), "simulation stalled with nothing to do (seed {})", self.seed);
        }
        panic!("no result within {max_steps} steps at t+{:?} (seed {})", self.now - self.t0, self.seed);
    }

    fn assert_each_chunk_accepted_once(&self, at: usize, id: ObjectId, size: usize) {
        let chunks = (size as u64).div_ceil(CHUNK).max(1) as u32;
        for index in 0..chunks {
            let n = self.nodes[at].accepted.get(&(id, index)).copied().unwrap_or(0);
            assert_eq!(n, 1, "chunk {index} accepted {n} times (seed {})", self.seed);
        }
        assert_eq!(self.nodes[at].accepted.keys().filter(|(o, _)| *o == id).count(), chunks as usize);
    }
}

/// Runs `scenario` for a range of seeds (or only `SIM_SEED`), naming the seed on failure.
fn for_seeds(count: u64, scenario: impl Fn(u64)) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => (0..count).collect(),
    };
    for seed in seeds {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(seed)));
        if let Err(panic) = run {
            eprintln!("simulation failed with seed {seed}; replay with SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn obj(b: u8) -> ObjectId {
    ObjectId([b; ObjectId::LEN])
}

const SIZE: usize = 10 * CHUNK as usize + 100;

#[test]
fn pull_completes_and_every_chunk_is_accepted_exactly_once() {
    for_seeds(20, |seed| {
        let mut sim = Sim::new(seed, 2, Faults { jitter_ms: 3, ..Faults::default() });
        let bytes = sim.put(0, obj(1), SIZE);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.drive_until(10_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        sim.assert_holds(1, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
        assert_eq!(sim.nodes[1].pulls_sent.len(), 1, "no retries on a clean link");
        assert!(sim.nodes[0].chunks_sent.values().all(|&n| n == 1));
    });
}

#[test]
fn lost_chunks_are_refetched_and_still_accepted_exactly_once() {
    for_seeds(20, |seed| {
        let mut sim = Sim::new(seed, 2, Faults { drop: 0.15, jitter_ms: 3, ..Faults::default() });
        let bytes = sim.put(0, obj(1), SIZE);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.drive_until(50_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        sim.assert_holds(1, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
    });
}

#[test]
fn source_dying_mid_object_completes_from_the_second_copy() {
    for_seeds(20, |seed| {
        let faults = Faults { jitter_ms: 2, kill_source: Some((1, obj(1), 4)), ..Faults::default() };
        let mut sim = Sim::new(seed, 3, faults);
        let bytes = sim.put(0, obj(1), SIZE);
        sim.put_copy(2, obj(1), &bytes);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.drive_until(10_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        let first = sim.nodes[1].pulls_sent[0].0;
        let dead = sim.index_of(first);
        assert!(!sim.nodes[dead].alive, "the first source was killed (seed {seed})");
        assert!(sim.nodes[1].pulls_sent.iter().any(|(n, _)| *n != first));
        sim.assert_holds(1, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
        assert!(sim.nodes[1].accepted_from[&(obj(1), first)] >= 4, "chunks from the dead copy are kept");
        assert!(sim.nodes[1].failed.is_empty());
    });
}

#[test]
fn pull_with_no_copy_anywhere_fails_after_the_fetch_timeout() {
    for_seeds(5, |seed| {
        let mut sim = Sim::new(seed, 2, Faults::default());
        sim.pull(1, 1, PullPriority::Get, vec![obj(9)]);
        sim.drive_until(1_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        let timeout = pull_config().fetch_timeout;
        assert_eq!(sim.nodes[1].failed, vec![(obj(9), PullFailure::NoLocation(timeout))]);
        assert_eq!(sim.now - sim.t0, timeout, "fails exactly at the deadline");
        assert!(sim.nodes[1].pulls_sent.is_empty());
        assert!(sim.nodes[1].buffers.is_empty());
    });
}

#[test]
fn corrupted_chunk_is_refetched_from_the_only_copy() {
    for_seeds(10, |seed| {
        let faults = Faults { jitter_ms: 2, corrupt_once: Some((obj(1), 3)), ..Faults::default() };
        let mut sim = Sim::new(seed, 2, faults);
        let bytes = sim.put(0, obj(1), SIZE);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.drive_until(10_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        sim.assert_holds(1, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
        assert_eq!(sim.nodes[1].corrupt_seen, 1);
        assert!(sim.nodes[1].pulls_sent.len() >= 2, "the object was re-requested");
        assert!(sim.now - sim.t0 >= pull_config().pull_retry, "re-requested by the retry timer");
    });
}

#[test]
fn corrupted_chunk_is_refetched_from_another_copy_at_once() {
    for_seeds(10, |seed| {
        let faults = Faults { corrupt_once: Some((obj(1), 0)), ..Faults::default() };
        let mut sim = Sim::new(seed, 3, faults);
        let bytes = sim.put(0, obj(1), SIZE);
        sim.put_copy(2, obj(1), &bytes);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.drive_until(10_000, |s| s.nodes[1].completed.contains(&BundleId(1)));
        sim.assert_holds(1, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
        let pulls = &sim.nodes[1].pulls_sent;
        assert_eq!(sim.nodes[1].corrupt_seen, 1);
        assert_eq!(pulls.len(), 2);
        assert_ne!(pulls[0].0, pulls[1].0);
        assert!(sim.now - sim.t0 < Duration::from_secs(1), "no retry timer was needed");
    });
}

#[test]
fn duplicate_pull_requests_cause_one_push() {
    for_seeds(10, |seed| {
        let faults = Faults { jitter_ms: 2, duplicate_pulls: true, ..Faults::default() };
        let mut sim = Sim::new(seed, 2, faults);
        let bytes = sim.put(0, obj(1), SIZE);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        sim.pull(1, 2, PullPriority::TaskArgs, vec![obj(1)]);
        sim.drive_until(10_000, |s| s.nodes[1].completed.len() == 2);
        sim.assert_holds(1, obj(1), &bytes);
        assert_eq!(sim.nodes[1].pulls_sent.len(), 1, "two bundles, one pull");
        assert_eq!(sim.nodes[0].push_starts, 1, "the duplicated request was suppressed");
        assert!(sim.nodes[0].chunks_sent.values().all(|&n| n == 1));
        sim.assert_each_chunk_accepted_once(1, obj(1), SIZE);
    });
}

#[test]
fn pull_of_an_object_not_yet_sealed_at_its_holder_waits_for_it() {
    for_seeds(5, |seed| {
        let mut sim = Sim::new(seed, 3, Faults { jitter_ms: 2, ..Faults::default() });
        // Node 1 pulls from node 0 while node 2 is told (early) that node 1 has a copy.
        let bytes = sim.put(0, obj(1), SIZE);
        sim.pull(1, 1, PullPriority::Get, vec![obj(1)]);
        let early = vec![sim.nodes[1].id];
        sim.watchers.entry(obj(1)).or_default().insert(2);
        sim.send(2, Msg::Locations { id: obj(1), snapshot: Some(early) });
        sim.nodes[2].pull.handle_pull(sim.now, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
        sim.drive_until(10_000, |s| s.nodes[2].completed.contains(&BundleId(1)));
        sim.assert_holds(2, obj(1), &bytes);
        sim.assert_each_chunk_accepted_once(2, obj(1), SIZE);
        assert_eq!(sim.nodes[2].pulls_sent, vec![(sim.nodes[1].id, obj(1))], "seed {seed}");
        assert!(sim.now - sim.t0 < Duration::from_secs(1), "served as soon as sealed, no retry");
    });
}

#[test]
fn lossy_reordering_links_with_resets_and_corruption_deliver_correct_bytes() {
    for_seeds(30, |seed| {
        let faults = Faults { drop: 0.05, reset: 0.02, corrupt: 0.03, jitter_ms: 5, ..Faults::default() };
        let mut sim = Sim::new(seed, 3, faults);
        let mut expected = BTreeMap::new();
        for k in 0..6u8 {
            let size = [0, 1, 1023, 1024, 5000, SIZE][k as usize];
            expected.insert(obj(k + 1), sim.put(usize::from(k % 3), obj(k + 1), size));
        }
        for at in 0..3 {
            let wanted: Vec<ObjectId> = (0..6u8).filter(|k| usize::from(k % 3) != at).map(|k| obj(k + 1)).collect();
            sim.pull(at, 1, PullPriority::Wait, wanted);
        }
        sim.drive_until(200_000, |s| s.nodes.iter().all(|n| n.completed.contains(&BundleId(1))));
        for (at, node) in sim.nodes.iter().enumerate() {
            assert!(node.failed.is_empty(), "seed {seed}");
            assert!(node.buffers.is_empty(), "no leaked buffers (seed {seed})");
            for (id, bytes) in &expected {
                sim.assert_holds(at, *id, bytes);
                if node.accepted.keys().any(|(o, _)| o == id) {
                    sim.assert_each_chunk_accepted_once(at, *id, bytes.len());
                }
            }
        }
    });
}
