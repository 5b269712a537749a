//! Worker processes on shard 0: spawning (through `process.rs` on the blocking pool),
//! killing with SIGTERM→SIGKILL escalation, routing exits (SIGCHLD via the signal thread,
//! and local-socket disconnects) into the pool, the registration hooks of the local
//! protocol, and the reaping `Exit` RPCs.
//!
//! A pid is known from the moment its spawn returns until its exit is reported. An exit
//! can be reaped before the spawn's result reaches shard 0 (a command that fails at once);
//! such exits are parked briefly and matched when the spawn result arrives.

use super::SchedService;
use crate::ids::{JobId, WorkerId};
use crate::local::codec::{ClientKind, Register};
use crate::logic::workers::ExitedProcess;
use crate::process::{self, env, Kill, SpawnSpec};
use crate::rpc::{CallOpts, RpcClient};
use crate::shard::bootstrap::ChildExit;
use crate::wire::rpc::{worker_service, ExitRequest};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Exits of unknown pids remembered for a late spawn result.
const ORPHAN_EXITS: usize = 256;

/// What a child pid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Child {
    /// A worker process started for this token.
    Worker(i64),
    /// The agent with this id.
    Agent(i64),
}

/// Live children of this node.
#[derive(Debug, Default)]
pub struct Processes {
    by_pid: RefCell<HashMap<u32, Child>>,
    orphan_exits: RefCell<VecDeque<u32>>,
}

impl Processes {
    /// Records a spawned child; false if it already exited (its exit came first).
    pub(super) fn insert(&self, pid: u32, child: Child) -> bool {
        let mut orphans = self.orphan_exits.borrow_mut();
        if let Some(i) = orphans.iter().position(|p| *p == pid) {
            orphans.remove(i);
            return false;
        }
        self.by_pid.borrow_mut().insert(pid, child);
        true
    }

    /// Forgets an exited child; unknown pids are parked for a late spawn result.
    pub(super) fn exited(&self, pid: u32) -> Option<Child> {
        let child = self.by_pid.borrow_mut().remove(&pid);
        if child.is_none() {
            let mut orphans = self.orphan_exits.borrow_mut();
            if orphans.len() == ORPHAN_EXITS {
                orphans.pop_front();
            }
            orphans.push_back(pid);
        }
        child
    }

    /// Whether `pid` is a live child.
    pub(super) fn is_alive(&self, pid: u32) -> bool {
        self.by_pid.borrow().contains_key(&pid)
    }

    /// The live child started for worker token `token`.
    pub(super) fn pid_of_token(&self, token: i64) -> Option<u32> {
        self.by_pid.borrow().iter().find(|(_, c)| **c == Child::Worker(token)).map(|(p, _)| *p)
    }

    /// SIGKILLs every child (node stop).
    pub(super) fn kill_all(&self) {
        for pid in self.by_pid.borrow().keys() {
            let _ = process::signal(*pid, Kill::Kill);
        }
    }
}

impl SchedService {
    /// Environment every child of the node gets.
    pub(super) fn child_env(&self) -> Vec<(String, String)> {
        let e = &self.env;
        let gcs = self.shard().and_then(|s| s.gcs_address.get()).map(|a| a.to_string()).unwrap_or_default();
        vec![
            (env::AUTH_TOKEN.into(), e.auth_token.clone()),
            (env::SOCKET.into(), e.socket.display().to_string()),
            (env::NODE_ID.into(), e.node_id.hex()),
            (env::NODE_IP.into(), e.node_ip.to_string()),
            (env::GCS_ADDRESS.into(), gcs),
        ]
    }

    /// Spawns the worker process for `token` on the blocking pool.
    pub(super) fn start_worker(self: &Rc<Self>, token: i64) {
        let mut argv = self.env.worker_argv.clone();
        if self.env.cfg.worker_command.is_empty() {
            argv.extend(["--startup-token".to_string(), token.to_string()]);
        }
        let mut env = self.child_env();
        env.push((env::STARTUP_TOKEN.into(), token.to_string()));
        let spec = SpawnSpec {
            argv,
            env,
            log: self.env.logs_dir.join(format!("worker-{token}.log")),
            oom_score_adj: Some(self.env.cfg.worker_oom_score_adj),
        };
        let me = self.clone();
        glommio::spawn_local(async move {
            let result = process::spawn(spec).await;
            let now = Instant::now();
            match result {
                Ok(pid) => {
                    let alive = me.procs.insert(pid, Child::Worker(token));
                    me.core.borrow_mut().handle_process_started(now, token, pid);
                    if !alive {
                        me.core.borrow_mut().handle_exit(now, ExitedProcess::Token(token));
                    }
                }
                Err(e) => {
                    tracing::warn!(token, "cannot start a worker process: {e}");
                    me.core.borrow_mut().handle_start_failed(now, token);
                }
            }
            me.drive();
        })
        .detach();
    }

    /// Kills a worker process: SIGKILL when forced, else SIGTERM and SIGKILL after the
    /// configured timeout if it has not exited by then. Only live children of this node
    /// are signalled: the pid a worker reported at registration is trusted only if it is
    /// one; otherwise the process started for the worker's token is the one killed.
    pub(super) fn kill_worker(self: &Rc<Self>, pid: u32, worker: Option<WorkerId>, force: bool) {
        let target = if self.procs.is_alive(pid) {
            Some(pid)
        } else {
            let token = worker.and_then(|w| self.core.borrow().pool().worker(w)).map(|w| w.token);
            token.and_then(|t| self.procs.pid_of_token(t))
        };
        match target {
            Some(pid) => {
                tracing::debug!(pid, ?worker, force, "killing worker process");
                self.kill_pid(pid, force);
            }
            None => tracing::debug!(pid, ?worker, "worker process already gone"),
        }
    }

    /// Signals a live child (see [`Self::kill_worker`]); unknown pids are left alone.
    fn kill_pid(self: &Rc<Self>, pid: u32, force: bool) {
        if !self.procs.is_alive(pid) {
            return;
        }
        let first = if force { Kill::Kill } else { Kill::Term };
        if let Err(e) = process::signal(pid, first) {
            tracing::warn!(pid, "cannot signal process: {e}");
        }
        if force {
            return;
        }
        let me = self.clone();
        let timeout = self.env.cfg.kill_worker_timeout;
        glommio::spawn_local(async move {
            glommio::timer::sleep(timeout).await;
            if me.procs.is_alive(pid) {
                tracing::debug!(pid, "still alive after SIGTERM: SIGKILL");
                let _ = process::signal(pid, Kill::Kill);
            }
        })
        .detach();
    }

    /// A child exited (reaped by the signal thread).
    pub fn child_exited(self: &Rc<Self>, exit: ChildExit) {
        let Ok(pid) = u32::try_from(exit.pid) else { return };
        match self.procs.exited(pid) {
            Some(Child::Worker(token)) => {
                tracing::debug!(pid, token, code = exit.code, "worker process exited");
                self.core.borrow_mut().handle_exit(Instant::now(), ExitedProcess::Token(token));
                self.drive();
            }
            Some(Child::Agent(id)) => self.agent_exited(id, exit.code),
            None => tracing::debug!(pid, "exit of an unknown child"),
        }
    }

    /// Reaping: asks an idle worker to exit; a refusal sends it back to the idle queue, a
    /// failed call counts as accepted and the process is killed.
    pub(super) fn request_exit(self: &Rc<Self>, worker: WorkerId) {
        let info = self.core.borrow().pool().worker(worker);
        let Some((pid, Some(port))) = info.map(|w| (w.pid, w.port)) else { return };
        let me = self.clone();
        let addr = SocketAddr::new(self.env.node_ip, port);
        glommio::spawn_local(async move {
            let client = RpcClient::new(addr, me.env.auth_token.clone().into());
            let req = ExitRequest { force_exit: false };
            let r = worker_service::client::exit(&client, &req, CallOpts::once(Duration::from_secs(5))).await;
            let accepted = match r {
                Ok(reply) => reply.success,
                Err(e) => {
                    tracing::debug!(%worker, "Exit RPC failed ({e}); killing the process");
                    me.kill_worker(pid, Some(worker), false);
                    true
                }
            };
            let _ = me.core.borrow_mut().handle_exit_reply(Instant::now(), worker, accepted);
            me.drive();
        })
        .detach();
    }

    /// Registration hook: a worker must present a startup token this pool issued and that
    /// is still waiting for its registration.
    pub fn admit_worker(self: &Rc<Self>, req: &Register) -> Result<(), String> {
        let pid = u32::try_from(req.pid).map_err(|_| format!("invalid pid {}", req.pid))?;
        let r = self.core.borrow_mut().handle_register(Instant::now(), req.startup_token, req.worker_id, pid);
        self.drive();
        r.map_err(|e| e.to_string())
    }

    /// A driver registered on the local socket.
    pub fn driver_registered(self: &Rc<Self>, worker: WorkerId, job: JobId, pid: i64) {
        let pid = u32::try_from(pid).unwrap_or(0);
        if let Err(e) = self.core.borrow_mut().handle_driver_register(Instant::now(), job, worker, pid) {
            tracing::debug!(%worker, "driver not tracked by the pool: {e}");
        }
        self.drive();
    }

    /// A registered client announced its port; pool workers become available.
    pub fn port_announced(self: &Rc<Self>, worker: WorkerId, port: i32) {
        if self.core.borrow().pool().worker(worker).is_none() {
            return;
        }
        let r = match u16::try_from(port) {
            Ok(p) if p > 0 => {
                self.core.borrow_mut().handle_port_announced(Instant::now(), worker, p).map_err(|e| e.to_string())
            }
            _ => Err(format!("port {port} is not usable")),
        };
        if let Err(e) = r {
            tracing::warn!(%worker, "port announcement ignored: {e}");
        }
        self.drive();
    }

    /// A registered client's local connection closed: a worker is gone (its lease, if any,
    /// is lost and its resources return); a driver's leases are cancelled or destroyed.
    pub fn client_gone(self: &Rc<Self>, worker: WorkerId, kind: ClientKind) {
        let now = Instant::now();
        match kind {
            ClientKind::Worker => {
                // The pool forgets it now; a process that outlives its connection is ended.
                let pid = self.core.borrow().pool().worker(worker).map(|w| w.pid);
                if let Some(pid) = pid {
                    self.kill_worker(pid, Some(worker), false);
                }
                self.core.borrow_mut().handle_exit(now, ExitedProcess::Worker(worker));
            }
            ClientKind::Driver => self.core.borrow_mut().handle_driver_exit(now, worker),
        }
        self.forget_backlog(worker);
        self.drive();
    }
}
