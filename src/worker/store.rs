//! The worker's registered local connection, owned by one thread: the raylet client is
//! single-threaded (its object views release through it), so connection threads hand
//! `produce` / `consume` jobs to this thread and wait for the answer.
//!
//! The thread also does the start-up on that connection: register with the startup
//! token, bind the WorkerService listener, announce its port.

use crate::client::tasks::{checksum, fill};
use crate::client::LocalClient;
use crate::ids::{ObjectId, WorkerId};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// A store job and where its answer goes.
#[derive(Debug)]
pub(super) enum Job {
    /// Create an object of `bytes` bytes filled from `seed`.
    Produce { bytes: u64, seed: u64, reply: mpsc::Sender<Result<ObjectId, String>> },
    /// Get an object and hash it: (crc32c, size).
    Consume { id: ObjectId, timeout: Duration, reply: mpsc::Sender<Result<(u32, u64), String>> },
}

/// What start-up yields: the worker's id, its listener, and the job queue.
pub(super) type Started = (WorkerId, TcpListener, mpsc::Sender<Job>);

/// Starts the store thread; returns once the worker is registered and announced.
pub(super) fn start(socket: PathBuf, token: i64, ip: IpAddr) -> Result<Started, String> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(WorkerId, TcpListener), String>>();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("worker-store".into())
        .spawn(move || {
            let mut client = match register(&socket, token, ip) {
                Ok((client, listener)) => {
                    let _ = ready_tx.send(Ok((client.worker_id(), listener)));
                    client
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            for job in jobs_rx {
                run(&mut client, job);
            }
        })
        .map_err(|e| format!("cannot start the store thread: {e}"))?;
    let (id, listener) = ready_rx.recv().map_err(|_| "the store thread died during start-up".to_string())??;
    Ok((id, listener, jobs_tx))
}

fn register(socket: &std::path::Path, token: i64, ip: IpAddr) -> Result<(LocalClient, TcpListener), String> {
    let mut client = LocalClient::connect(socket)
        .map_err(|e| format!("cannot connect to the raylet at {}: {e}", socket.display()))?;
    client.register_worker(token).map_err(|e| format!("registration refused: {e}"))?;
    let listener = TcpListener::bind((ip, 0)).map_err(|e| format!("cannot bind a port: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    client.announce_port(port, false).map_err(|e| format!("cannot announce port {port}: {e}"))?;
    Ok((client, listener))
}

fn run(client: &mut LocalClient, job: Job) {
    match job {
        Job::Produce { bytes, seed, reply } => {
            let _ = reply.send(produce(client, bytes, seed));
        }
        Job::Consume { id, timeout, reply } => {
            let _ = reply.send(consume(client, id, timeout));
        }
    }
}

fn produce(client: &mut LocalClient, bytes: u64, seed: u64) -> Result<ObjectId, String> {
    let id = ObjectId::random();
    let mut w = client.create(id, bytes, 0, true).map_err(|e| format!("create: {e}"))?;
    fill(w.data_mut(), seed);
    client.seal(w).map_err(|e| format!("seal: {e}"))?;
    client.release(&[id]).map_err(|e| format!("release: {e}"))?;
    Ok(id)
}

fn consume(client: &mut LocalClient, id: ObjectId, timeout: Duration) -> Result<(u32, u64), String> {
    let mut views = client.get(&[id], Some(timeout)).map_err(|e| format!("get: {e}"))?;
    let view = views.pop().flatten().ok_or_else(|| format!("object {id} is not available within {timeout:?}"))?;
    let data = view.data();
    Ok((checksum(data), data.len() as u64))
}
