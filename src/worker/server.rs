//! The worker's `WorkerService` server: one blocking thread per authenticated connection
//! (see the parent module for why; [`super::gate`] checks the hello), the built-in tasks,
//! and the Exit / LocalGC semantics.
//!
//! Exit (RAY-NOTES.md §8.5): `force_exit` always succeeds; a cooperative exit is refused
//! while a task is running on another connection (the worker still has work that someone
//! waits for), which sends the worker back to the raylet's idle queue. After a successful
//! reply has been written the process exits.
//!
//! LocalGC: the worker drops what it caches between tasks (object views are released as
//! soon as a task ends, so nothing is cached and this only counts) and records the run,
//! which `stats` reports.

use super::store::Job;
use crate::client::wire_io::FrameStream;
use crate::ids::{ObjectId, WorkerId};
use crate::rpc::frame::{FrameHeader, FrameKind, FrameLimits};
use crate::rpc::Status;
use crate::wire::rpc::worker_service::{self, WorkerServiceHandler};
use crate::wire::rpc::*;
use prost::Message;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// Longest `sleep` task accepted.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The worker process's shared state.
#[derive(Debug)]
pub(super) struct Worker {
    id: WorkerId,
    tasks_run: AtomicU64,
    local_gc_runs: AtomicU64,
    exit_refused: AtomicU64,
    busy: AtomicUsize,
    exiting: AtomicBool,
    /// The store thread's queue (`produce` / `consume`).
    jobs: Mutex<mpsc::Sender<Job>>,
    /// How long a connection polls for the next request before blocking.
    spin: Duration,
}

impl Worker {
    pub(super) fn new(id: WorkerId, jobs: mpsc::Sender<Job>, spin: Duration) -> Self {
        Self {
            id,
            tasks_run: AtomicU64::new(0),
            local_gc_runs: AtomicU64::new(0),
            exit_refused: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            exiting: AtomicBool::new(false),
            jobs: Mutex::new(jobs),
            spin,
        }
    }

    /// Runs a job on the store thread and waits for its answer.
    fn store<T>(&self, make: impl FnOnce(mpsc::Sender<Result<T, String>>) -> Job) -> Result<T, Status> {
        let (tx, rx) = mpsc::channel();
        let sent = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(make(tx));
        sent.map_err(|_| Status::unavailable("the worker's raylet connection is gone"))?;
        rx.recv().map_err(|_| Status::unavailable("the worker's raylet connection is gone"))?.map_err(Status::internal)
    }

    /// Serves one authenticated connection until it closes or sends garbage.
    pub(super) fn serve(&self, s: TcpStream) {
        let mut s = FrameStream::new(s);
        s.set_spin(self.spin);
        let limits = FrameLimits::default();
        loop {
            let Ok((h, payload)) = s.read_frame(&limits) else { return };
            if h.kind != FrameKind::Request {
                return;
            }
            let result = if h.service == worker_service::SERVICE_ID {
                futures_lite::future::block_on(worker_service::dispatch(self, h.method, &payload))
            } else {
                Err(Status::unimplemented(format!("unknown service {}", h.service)))
            };
            let (kind, body) = match result {
                Ok(b) => (FrameKind::Response, b),
                Err(st) => (FrameKind::Error, st.to_proto().encode_to_vec()),
            };
            if s.write_frame(FrameHeader::reply_to(&h, kind), &body).is_err() {
                return;
            }
            if self.exiting.load(SeqCst) {
                std::process::exit(0);
            }
        }
    }

    fn counters(&self) -> WorkerCounters {
        WorkerCounters {
            tasks_run: self.tasks_run.load(SeqCst),
            local_gc_runs: self.local_gc_runs.load(SeqCst),
            pid: std::process::id(),
            worker_id: self.id.to_vec(),
            exit_requests_refused: self.exit_refused.load(SeqCst),
        }
    }

    fn run_task(&self, task: push_task_request::Task) -> Result<PushTaskReply, Status> {
        use push_task_request::Task;
        match task {
            Task::Noop(_) => Ok(PushTaskReply::default()),
            Task::Sleep(t) => {
                let d = Duration::from_millis(t.ms);
                if d > MAX_SLEEP {
                    return Err(Status::invalid_argument(format!("sleep of {} ms exceeds {MAX_SLEEP:?}", t.ms)));
                }
                std::thread::sleep(d);
                Ok(PushTaskReply::default())
            }
            Task::Stats(_) => Ok(PushTaskReply { counters: Some(self.counters()), ..Default::default() }),
            Task::Produce(t) => {
                let id = self.store(|reply| Job::Produce { bytes: t.bytes, seed: t.seed, reply })?;
                Ok(PushTaskReply { object_id: id.to_vec(), ..Default::default() })
            }
            Task::Consume(t) => {
                let id = ObjectId::from_bytes(&t.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
                let timeout =
                    if t.timeout_ms == 0 { Duration::from_secs(60) } else { Duration::from_millis(t.timeout_ms) };
                let (crc32c, size) = self.store(|reply| Job::Consume { id, timeout, reply })?;
                Ok(PushTaskReply { crc32c, size, ..Default::default() })
            }
        }
    }
}

/// Decrements the busy count however the task ends.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl WorkerServiceHandler for Worker {
    async fn push_task(&self, req: PushTaskRequest) -> Result<PushTaskReply, Status> {
        let task = req.task.ok_or_else(|| Status::invalid_argument("PushTask: no task given"))?;
        self.busy.fetch_add(1, SeqCst);
        let _busy = Busy(&self.busy);
        let r = self.run_task(task);
        self.tasks_run.fetch_add(1, SeqCst);
        r
    }

    async fn exit(&self, req: ExitRequest) -> Result<ExitReply, Status> {
        if !req.force_exit && self.busy.load(SeqCst) > 0 {
            self.exit_refused.fetch_add(1, SeqCst);
            return Ok(ExitReply { success: false });
        }
        self.exiting.store(true, SeqCst);
        Ok(ExitReply { success: true })
    }

    async fn local_gc(&self, _req: LocalGcRequest) -> Result<LocalGcReply, Status> {
        self.local_gc_runs.fetch_add(1, SeqCst);
        Ok(LocalGcReply {})
    }
}
