//! The scheduling plane: worker pool, leases, resources, placement-group bundles, agent.
//!
//! Shard 0 owns the node-wide ledger (DESIGN.md §2): one [`Scheduler`] (lease queue +
//! worker pool + bundle ledger, `logic::lease::scheduler`) inside [`SchedService`]. Every
//! other shard only converts and forwards (see [`rpc`] and [`msg`]).
//!
//! Files, one concern each:
//! - [`rpc`]: NodeManagerService / AgentManagerService handlers on every shard.
//! - [`convert`]: wire ↔ domain, with validation of peer input.
//! - [`drive`]: runs the scheduler's actions and its one timer.
//! - [`lease`]: lease requests, cancels, returns, backlog, and the deferred replies.
//! - [`pool`]: worker processes: spawn, kill, exits, registration hooks, reaping RPCs.
//! - [`resources`]: resource reports, the GCS broadcast, peer changes, Global/Local GC.
//! - [`bundles`]: placement-group two-phase commit on this node.
//! - [`agent`]: the supervised agent process.
//! - [`stats`]: the workers part of GetNodeStats.
//! - [`timer`]: one re-armable timer per machine.
//! - [`gcs_sync`], [`gcs_pg`]: on the head, the GCS's resource pulls/broadcasts and its
//!   placement-group service.
//!
//! Cross-shard calls: shards 1..N call shard 0 (`Req::Sched`); shard 0 never calls back
//! into a shard while serving one (it only spawns RPCs to other processes).

pub mod agent;
pub mod args;
pub mod bundles;
pub mod convert;
pub mod drive;
pub mod gcs_pg;
pub mod gcs_sync;
pub mod lease;
pub mod msg;
pub mod pool;
pub mod resources;
pub mod rpc;
pub mod stats;
pub mod timer;

use crate::config::SchedConfig;
use crate::ids::NodeId;
use crate::logic::lease::queue::{LeaseQueue, QueueConfig};
use crate::logic::lease::scheduler::Scheduler;
use crate::logic::resources::{NodeResources, ResourceSet, GPU};
use crate::logic::workers::{PoolConfig, WorkerPool};
use crate::shard::Shard;
use msg::{SchedRep, SchedReq};
use std::cell::RefCell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// What the plane needs to know about its node.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// This node.
    pub node_id: NodeId,
    /// The address it advertises.
    pub node_ip: IpAddr,
    /// Settings.
    pub cfg: SchedConfig,
    /// Worker command line (resolved default).
    pub worker_argv: Vec<String>,
    /// Where child logs go.
    pub logs_dir: PathBuf,
    /// The local socket.
    pub socket: PathBuf,
    /// The cluster auth token.
    pub auth_token: String,
}

/// Shard 0's scheduling plane.
#[derive(Debug)]
pub struct SchedService {
    core: RefCell<Scheduler>,
    env: NodeEnv,
    shard: Weak<Shard>,
    replies: lease::Replies,
    procs: pool::Processes,
    timer: timer::Rearm,
    sync: resources::SyncState,
    agent: agent::Agent,
    args: args::Args,
}

impl SchedService {
    /// Builds the plane for `shard` (shard 0) from the node's configuration.
    pub fn new(shard: &Rc<Shard>) -> Result<Rc<Self>, String> {
        let cfg = &shard.cfg;
        let sc = cfg.sched.clone();
        let now = Instant::now();
        let total = ResourceSet::from_f64_map(cfg.resources.iter().cloned());
        let resources = NodeResources::new(&total, &[GPU]);
        let cpus = usize::try_from(total.get(crate::logic::resources::CPU).trunc_units()).unwrap_or(0);
        let qcfg = QueueConfig { max_leases: shard.cfg.sched.max_queued_leases, ..QueueConfig::default() };
        let queue = LeaseQueue::new(shard.node_id, resources, qcfg, seed(shard.node_id));
        let pool_cfg = PoolConfig {
            max_startup_concurrency: if sc.maximum_startup_concurrency == 0 {
                cpus.max(1)
            } else {
                sc.maximum_startup_concurrency
            },
            register_timeout: sc.worker_register_timeout,
            soft_limit: sc.num_workers_soft_limit,
            idle_kill_threshold: sc.idle_worker_killing_time_threshold,
            kill_idle_interval: sc.kill_idle_workers_interval,
            // `--num-prestart-workers` starts workers with the node (see `start`), not
            // again at the first driver: drivers need not register on the local socket.
            num_prestart: 0,
            ..Default::default()
        };
        let pool = WorkerPool::new(pool_cfg, now, cpus);
        let worker_argv = if sc.worker_command.is_empty() {
            crate::process::this_binary("worker").map_err(|e| format!("cannot find this binary: {e}"))?
        } else {
            sc.worker_command.clone()
        };
        let env = NodeEnv {
            node_id: shard.node_id,
            node_ip: cfg.node_ip,
            cfg: sc,
            worker_argv,
            logs_dir: cfg.logs_dir(),
            socket: cfg.socket_path(),
            auth_token: cfg.auth_token.clone(),
        };
        Ok(Rc::new(Self {
            core: RefCell::new(Scheduler::new(queue, pool)),
            env,
            shard: Rc::downgrade(shard),
            replies: lease::Replies::default(),
            procs: pool::Processes::default(),
            timer: timer::Rearm::default(),
            sync: resources::SyncState::default(),
            agent: agent::Agent::default(),
            args: args::Args::default(),
        }))
    }

    /// Starts the plane's tasks (the scheduler timer, prestart, the agent).
    pub fn start(self: &Rc<Self>, shard: &Rc<Shard>) {
        let t = timer::run(Rc::downgrade(self), |s| &s.timer, drive::fire);
        shard.keep(glommio::spawn_local(t).detach());
        let n = self.env.cfg.num_prestart_workers;
        if n > 0 {
            self.core.borrow_mut().handle_prestart(Instant::now(), n);
            self.drive();
        }
        self.start_agent();
    }

    /// Serves one forwarded request (shard 0).
    pub async fn handle(self: &Rc<Self>, req: SchedReq) -> SchedRep {
        match req {
            SchedReq::Lease { req, backlog } => SchedRep::Lease(self.request_lease(*req, backlog).await),
            SchedReq::ConnClosed(conn) => {
                self.conn_closed(conn);
                SchedRep::Done(Ok(()))
            }
            SchedReq::Cancel(lease) => SchedRep::Verdict(self.cancel_lease(lease)),
            SchedReq::Return { worker, disconnect, exiting } => {
                SchedRep::Done(self.return_worker(worker, disconnect, exiting))
            }
            SchedReq::Backlog { worker, reports } => SchedRep::Done(self.report_backlog(worker, reports)),
            SchedReq::Report => SchedRep::Report(Box::new(self.resource_report())),
            SchedReq::Broadcast { seq, updates } => {
                self.apply_broadcast(seq, updates);
                SchedRep::Done(Ok(()))
            }
            SchedReq::Prepare(b) => SchedRep::Verdict(self.prepare_bundles(&b)),
            SchedReq::Commit(b) => {
                self.commit_bundles(&b);
                SchedRep::Done(Ok(()))
            }
            SchedReq::CancelBundle(key) => {
                self.cancel_bundle(key);
                SchedRep::Done(Ok(()))
            }
            SchedReq::ReleaseUnusedBundles(keys) => {
                self.release_unused_bundles(&keys);
                SchedRep::Done(Ok(()))
            }
            SchedReq::GlobalGc => {
                self.global_gc();
                SchedRep::Done(Ok(()))
            }
            SchedReq::RegisterAgent { pid, port, id } => SchedRep::Done(self.agent_registered(pid, port, id)),
        }
    }

    /// Graceful stop: kill every worker and the agent (the node is going away).
    pub fn stop(&self) {
        self.agent.stop(&self.procs);
        self.procs.kill_all();
    }

    fn shard(&self) -> Option<Rc<Shard>> {
        self.shard.upgrade()
    }
}

/// A seed for the policy's top-k choice that differs per node.
fn seed(node: NodeId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&node.0[..8]);
    u64::from_le_bytes(b)
}
