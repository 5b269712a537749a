//! `raylet agent`: the minimal agent process a node can supervise (`--agent-command`).
//! It registers with its raylet through `AgentManagerService.RegisterAgent`, holds a port
//! for its own services, and lives until the raylet ends it (or dies: parent-death
//! signal).

use crate::process::env;
use crate::rpc::{BlockingClient, CallOpts};
use crate::wire::rpc::{agent_manager_service, RegisterAgentRequest};
use std::time::Duration;

/// Where the agent registers; every field also comes from the raylet-set environment.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The raylet's node manager address HOST:PORT.
    #[arg(long, env = env::NODE_MANAGER_ADDRESS)]
    pub node_manager_address: String,
    /// The id the raylet gave this agent.
    #[arg(long, env = env::AGENT_ID)]
    pub agent_id: i64,
}

/// Registers and then waits to be ended; returns the exit code on failure.
pub fn run(args: &AgentArgs) -> i32 {
    crate::process::die_with_parent();
    match register(args) {
        Ok(_listener) => loop {
            // Nothing to do until the raylet stops us; the listener stays bound.
            std::thread::park();
        },
        Err(e) => {
            eprintln!("raylet agent: {e}");
            1
        }
    }
}

fn register(args: &AgentArgs) -> Result<std::net::TcpListener, String> {
    let token = std::env::var(env::AUTH_TOKEN).map_err(|_| format!("{} is not set", env::AUTH_TOKEN))?;
    let addr = super::session::resolve_addr(&args.node_manager_address)?;
    let listener = std::net::TcpListener::bind((addr.ip(), 0)).map_err(|e| format!("cannot bind a port: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut client = BlockingClient::new(addr, token);
    let req = RegisterAgentRequest {
        agent_pid: std::process::id() as i32,
        agent_port: i32::from(port),
        agent_ip_address: addr.ip().to_string(),
        agent_id: args.agent_id,
    };
    let reply = agent_manager_service::blocking::register_agent(
        &mut client,
        &req,
        CallOpts::idempotent(Duration::from_secs(10)),
    )
    .map_err(|e| format!("RegisterAgent at {addr}: {e}"))?;
    if !reply.success {
        return Err(format!("registration refused: {}", reply.failure_reason));
    }
    Ok(listener)
}
