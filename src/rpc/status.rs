//! Errors of the RPC layer: [`Status`] is what a handler returns to its caller on the wire;
//! [`RpcError`] is what a client sees (a remote status or a local transport failure).

use std::time::Duration;
use thiserror::Error;

/// Status codes carried in an `RpcStatus` error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    /// The request was malformed or named something invalid.
    InvalidArgument = 3,
    /// The deadline passed.
    DeadlineExceeded = 4,
    /// An id the request named is not known.
    NotFound = 5,
    /// The call cannot run in the current state.
    FailedPrecondition = 9,
    /// Aborted (e.g. shutting down).
    Aborted = 10,
    /// No such service or method.
    Unimplemented = 12,
    /// A bug on the server side.
    Internal = 13,
    /// Try again later.
    Unavailable = 14,
    /// The store or a queue is full.
    ResourceExhausted = 8,
    /// Wrong auth token.
    Unauthenticated = 16,
}

impl Code {
    /// From the wire value; unknown values map to `Internal`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            3 => Self::InvalidArgument,
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            10 => Self::Aborted,
            12 => Self::Unimplemented,
            14 => Self::Unavailable,
            16 => Self::Unauthenticated,
            _ => Self::Internal,
        }
    }
}

/// A handler's failure, sent to the caller as an error frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    /// The code.
    pub code: Code,
    /// Human-readable reason.
    pub message: String,
}

macro_rules! ctor {
    ($name:ident, $code:ident) => {
        #[doc = concat!("A `", stringify!($code), "` status.")]
        pub fn $name(msg: impl Into<String>) -> Self {
            Self { code: Code::$code, message: msg.into() }
        }
    };
}

impl Status {
    ctor!(invalid_argument, InvalidArgument);
    ctor!(not_found, NotFound);
    ctor!(unimplemented, Unimplemented);
    ctor!(unavailable, Unavailable);
    ctor!(internal, Internal);
    ctor!(failed_precondition, FailedPrecondition);
    ctor!(resource_exhausted, ResourceExhausted);
    ctor!(aborted, Aborted);
    ctor!(deadline_exceeded, DeadlineExceeded);

    /// As the wire message.
    pub fn to_proto(&self) -> crate::wire::rpc::RpcStatus {
        crate::wire::rpc::RpcStatus { code: self.code as i32, message: self.message.clone() }
    }

    /// From the wire message.
    pub fn from_proto(p: crate::wire::rpc::RpcStatus) -> Self {
        Self { code: Code::from_i32(p.code), message: p.message }
    }
}

/// What a client call can fail with.
#[derive(Debug, Clone, Error)]
pub enum RpcError {
    /// The server answered with an error status.
    #[error("remote error {0}")]
    Status(Status),
    /// Connecting, reading or writing failed.
    #[error("transport: {0}")]
    Io(String),
    /// The connection closed before the reply.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No reply within the deadline.
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    /// The reply did not decode.
    #[error("undecodable reply: {0}")]
    Decode(String),
    /// The peer refused our hello.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The peer sent a malformed frame.
    #[error("bad frame: {0}")]
    Frame(#[from] crate::rpc::frame::FrameError),
}

impl RpcError {
    /// Whether retrying an idempotent call may help (transport trouble, not a verdict).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io(_) | Self::Closed(_) => true,
            Self::Status(s) => s.code == Code::Unavailable,
            _ => false,
        }
    }
}

impl From<std::io::Error> for RpcError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Per-call options.
#[derive(Debug, Clone, Copy)]
pub struct CallOpts {
    /// Overall deadline, including retries.
    pub timeout: Duration,
    /// Safe to resend after a transport failure.
    pub idempotent: bool,
}

impl CallOpts {
    /// A non-idempotent call with `timeout`.
    pub fn once(timeout: Duration) -> Self {
        Self { timeout, idempotent: false }
    }

    /// An idempotent call with `timeout`: retried with backoff on transport failures.
    pub fn idempotent(timeout: Duration) -> Self {
        Self { timeout, idempotent: true }
    }
}

impl Default for CallOpts {
    fn default() -> Self {
        Self::once(Duration::from_secs(10))
    }
}
