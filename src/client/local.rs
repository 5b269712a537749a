//! The local-socket client: connect, register, announce, disconnect.

use crate::ids::{JobId, NodeId, WorkerId};
use crate::local::codec::{self, ClientKind, DisconnectKind, LocalMessage, Register, HEADER_LEN};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What a local call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("local socket: {0}")]
    Io(#[from] std::io::Error),
    /// The raylet sent something we cannot decode.
    #[error("bad frame from the raylet: {0}")]
    Codec(#[from] codec::CodecError),
    /// The raylet refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The raylet answered with an unexpected message.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// A connection to the local raylet.
#[derive(Debug)]
pub struct LocalClient {
    stream: UnixStream,
    worker_id: WorkerId,
    node_id: Option<NodeId>,
    max_frame: u64,
}

impl LocalClient {
    /// Connects to the raylet socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)?;
        Ok(Self { stream, worker_id: WorkerId::random(), node_id: None, max_frame: 1 << 30 })
    }

    /// This client's id.
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    /// The node it registered with.
    pub fn node_id(&self) -> Option<NodeId> {
        self.node_id
    }

    /// Sends one message.
    pub fn send(&mut self, m: &LocalMessage) -> Result<(), ClientError> {
        self.stream.write_all(&codec::encode(m))?;
        Ok(())
    }

    /// Reads one message.
    pub fn recv(&mut self) -> Result<LocalMessage, ClientError> {
        let mut h = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut h)?;
        let header = codec::decode_header(&h, self.max_frame)?;
        let mut p = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut p)?;
        Ok(codec::decode_message(header.msg_type, &p)?)
    }

    fn register(&mut self, kind: ClientKind, job: JobId, token: i64) -> Result<NodeId, ClientError> {
        self.send(&LocalMessage::Register(Register {
            kind,
            worker_id: self.worker_id,
            pid: i64::from(std::process::id()),
            startup_token: token,
            job_id: job,
            ip_address: "127.0.0.1".into(),
        }))?;
        match self.recv()? {
            LocalMessage::RegisterReply(r) if r.success => {
                self.node_id = Some(r.node_id);
                Ok(r.node_id)
            }
            LocalMessage::RegisterReply(r) => Err(ClientError::Refused(r.failure_reason)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Registers as a driver of `job`.
    pub fn register_driver(&mut self, job: JobId) -> Result<NodeId, ClientError> {
        self.register(ClientKind::Driver, job, -1)
    }

    /// Registers as a worker started by the pool with `startup_token`.
    pub fn register_worker(&mut self, startup_token: i64) -> Result<NodeId, ClientError> {
        self.register(ClientKind::Worker, JobId::NIL, startup_token)
    }

    /// Announces the port of this client's server. Drivers get a verdict; workers do not.
    pub fn announce_port(&mut self, port: u16, is_driver: bool) -> Result<(), ClientError> {
        self.send(&LocalMessage::AnnounceWorkerPort { port: i32::from(port) })?;
        if !is_driver {
            return Ok(());
        }
        match self.recv()? {
            LocalMessage::AnnounceWorkerPortReply { success: true, .. } => Ok(()),
            LocalMessage::AnnounceWorkerPortReply { failure_reason, .. } => Err(ClientError::Refused(failure_reason)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Says goodbye and waits for the acknowledgement.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        self.send(&LocalMessage::Disconnect { kind: DisconnectKind::Intended, detail: "client disconnect".into() })?;
        match self.recv()? {
            LocalMessage::DisconnectReply => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
