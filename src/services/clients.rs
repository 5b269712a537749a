//! The node-wide table of registered workers and drivers (shard 0). Connection shards ask
//! it to register a client and tell it when one announces its port or goes away.

use crate::ids::{JobId, ShardId, WorkerId};
use crate::local::codec::{ClientKind, Register, RegisterReply};
use std::cell::RefCell;
use std::collections::HashMap;

/// One registered client.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// Worker or driver.
    pub kind: ClientKind,
    /// Its pid.
    pub pid: i64,
    /// The shard serving its connection.
    pub shard: ShardId,
    /// Announced port (0 until announced).
    pub port: i32,
    /// Its job.
    pub job: JobId,
}

/// Registered clients by id.
#[derive(Debug)]
pub struct ClientTable {
    node_id: crate::ids::NodeId,
    clients: RefCell<HashMap<WorkerId, ClientRecord>>,
}

impl ClientTable {
    /// An empty table for node `node_id`.
    pub fn new(node_id: crate::ids::NodeId) -> Self {
        Self { node_id, clients: RefCell::new(HashMap::new()) }
    }

    /// Registers a client; the verdict goes back to its connection.
    pub fn register(&self, shard: &crate::shard::Shard, conn_shard: ShardId, req: Register) -> RegisterReply {
        let refuse = |why: String| RegisterReply {
            success: false,
            failure_reason: why,
            node_id: self.node_id,
            port: 0,
            shard: conn_shard.0,
            num_shards: 0,
            shard_sockets: Vec::new(),
        };
        if req.worker_id.is_nil() {
            return refuse("worker id must not be nil".into());
        }
        if self.clients.borrow().contains_key(&req.worker_id) {
            return refuse(format!("worker {} is already registered", req.worker_id));
        }
        if req.kind == ClientKind::Driver && req.job_id.is_nil() {
            return refuse("a driver must carry a job id".into());
        }
        if req.kind == ClientKind::Worker {
            if let Err(why) = shard.node().map(|n| n.check_worker_token(&req)).unwrap_or(Ok(())) {
                return refuse(why);
            }
        }
        self.clients.borrow_mut().insert(
            req.worker_id,
            ClientRecord { kind: req.kind, pid: req.pid, shard: conn_shard, port: 0, job: req.job_id },
        );
        tracing::debug!(worker = %req.worker_id, kind = ?req.kind, pid = req.pid, "client registered");
        RegisterReply {
            success: true,
            failure_reason: String::new(),
            node_id: self.node_id,
            port: 0,
            shard: conn_shard.0,
            num_shards: 0,
            shard_sockets: Vec::new(),
        }
    }

    /// Records an announced port.
    pub fn announce_port(&self, id: WorkerId, port: i32) -> Result<(), String> {
        if !(0..=65535).contains(&port) {
            return Err(format!("port {port} is out of range"));
        }
        match self.clients.borrow_mut().get_mut(&id) {
            Some(c) => {
                c.port = port;
                Ok(())
            }
            None => Err(format!("worker {id} is not registered")),
        }
    }

    /// Forgets a client; returns its record.
    pub fn gone(&self, id: WorkerId, detail: &str) -> Option<ClientRecord> {
        let rec = self.clients.borrow_mut().remove(&id);
        if rec.is_some() {
            tracing::debug!(worker = %id, "client disconnected: {detail}");
        }
        rec
    }

    /// Whether `id` is registered.
    pub fn is_registered(&self, id: &WorkerId) -> bool {
        self.clients.borrow().contains_key(id)
    }

    /// Counts of (workers, drivers).
    pub fn counts(&self) -> (usize, usize) {
        let c = self.clients.borrow();
        let drivers = c.values().filter(|r| r.kind == ClientKind::Driver).count();
        (c.len() - drivers, drivers)
    }

    /// A snapshot of every client.
    pub fn snapshot(&self) -> Vec<(WorkerId, ClientRecord)> {
        self.clients.borrow().iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}
