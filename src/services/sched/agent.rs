//! Agent supervision (Ray's `AgentManager`): `--agent-command` is started with the node,
//! must register through `AgentManagerService.RegisterAgent` within the registration
//! timeout (else it is killed), and is restarted after it dies with an exponential backoff
//! (the configured interval, doubling up to 30 s; back to the interval once an agent has
//! stayed registered for a minute). Each start gets a fresh id (env `RAYLET_AGENT_ID`), so
//! only the current process can register.

use super::pool::Child;
use super::SchedService;
use crate::process::{self, env, Kill, SpawnSpec};
use crate::wire::rpc::AgentStats;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A registered agent that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Running {
    id: i64,
    pid: Option<u32>,
    registered_at: Option<Instant>,
    port: i32,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    current: Option<Running>,
    restarts: u32,
    backoff: Option<Duration>,
    stopping: bool,
}

/// The supervised agent.
#[derive(Debug, Default)]
pub struct Agent {
    state: RefCell<State>,
}

impl Agent {
    /// Stops supervising and kills the agent (node stop).
    pub(super) fn stop(&self, procs: &super::pool::Processes) {
        let mut st = self.state.borrow_mut();
        st.stopping = true;
        if let Some(pid) = st.current.and_then(|r| r.pid) {
            if procs.is_alive(pid) {
                let _ = process::signal(pid, Kill::Kill);
            }
        }
    }

    /// For GetNodeStats.
    pub(super) fn stats(&self) -> Option<AgentStats> {
        let st = self.state.borrow();
        if st.next_id == 0 {
            return None;
        }
        let cur = st.current;
        Some(AgentStats {
            pid: cur.and_then(|r| r.pid).map(|p| p as i32).unwrap_or(0),
            registered: cur.is_some_and(|r| r.registered_at.is_some()),
            port: cur.map(|r| r.port).unwrap_or(0),
            restarts: st.restarts,
        })
    }
}

impl SchedService {
    /// Starts the agent process if one is configured and none runs.
    pub(super) fn start_agent(self: &Rc<Self>) {
        if self.env.cfg.agent_command.is_empty() {
            return;
        }
        let id = {
            let mut st = self.agent.state.borrow_mut();
            if st.stopping || st.current.is_some() {
                return;
            }
            st.next_id += 1;
            st.current = Some(Running { id: st.next_id, pid: None, registered_at: None, port: 0 });
            st.next_id
        };
        let mut env = self.child_env();
        env.push((env::AGENT_ID.into(), id.to_string()));
        let port = self.shard().and_then(|s| s.ports.get()).map(|p| p.node_manager_port).unwrap_or(0);
        env.push((env::NODE_MANAGER_ADDRESS.into(), format!("{}:{port}", self.env.node_ip)));
        let spec = SpawnSpec {
            argv: self.env.cfg.agent_command.clone(),
            env,
            log: self.env.logs_dir.join("agent.log"),
            oom_score_adj: None,
        };
        let me = self.clone();
        glommio::spawn_local(async move {
            match process::spawn(spec).await {
                Ok(pid) => {
                    tracing::info!(pid, id, "agent started");
                    if let Some(r) = me.agent.state.borrow_mut().current.as_mut().filter(|r| r.id == id) {
                        r.pid = Some(pid);
                    }
                    if !me.procs.insert(pid, Child::Agent(id)) {
                        me.agent_exited(id, -1);
                        return;
                    }
                    glommio::timer::sleep(me.env.cfg.agent_register_timeout).await;
                    let late = me.agent.state.borrow().current.is_some_and(|r| r.id == id && r.registered_at.is_none());
                    if late && me.procs.is_alive(pid) {
                        tracing::warn!(pid, "agent did not register in time; killing it");
                        let _ = process::signal(pid, Kill::Kill);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot start the agent: {e}");
                    me.agent_exited(id, -1);
                }
            }
        })
        .detach();
    }

    /// The agent with `id` died: restart it after the backoff.
    pub(super) fn agent_exited(self: &Rc<Self>, id: i64, code: i32) {
        let delay = {
            let mut st = self.agent.state.borrow_mut();
            let Some(cur) = st.current.filter(|r| r.id == id) else { return };
            st.current = None;
            if st.stopping {
                return;
            }
            let first = self.env.cfg.agent_restart_interval;
            if cur.registered_at.is_some_and(|t| t.elapsed() >= STABLE) {
                st.backoff = None;
            }
            let delay = st.backoff.unwrap_or(first);
            st.backoff = Some((delay * 2).min(MAX_BACKOFF));
            st.restarts += 1;
            delay
        };
        tracing::warn!(code, ?delay, "agent exited; restarting after the backoff");
        let me = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            me.start_agent();
        })
        .detach();
    }

    /// `RegisterAgent` from the process started with `id`.
    pub(super) fn agent_registered(&self, pid: i32, port: i32, id: i64) -> Result<(), String> {
        let mut st = self.agent.state.borrow_mut();
        let Some(cur) = st.current.as_mut().filter(|r| r.id == id) else {
            return Err(format!("agent id {id} is not the agent this raylet started"));
        };
        if cur.pid.is_some_and(|p| i64::from(p) != i64::from(pid)) {
            return Err(format!("agent {id} runs as another pid than {pid}"));
        }
        if !(0..=65535).contains(&port) {
            return Err(format!("agent port {port} is out of range"));
        }
        cur.registered_at = Some(Instant::now());
        cur.port = port;
        tracing::info!(pid, port, "agent registered");
        Ok(())
    }

    /// The agent part of GetNodeStats.
    pub fn agent_stats(&self) -> Option<AgentStats> {
        self.agent.stats()
    }
}
