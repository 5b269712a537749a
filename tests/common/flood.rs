//! Floods of unauthenticated TCP connections, and what a process holds while one lasts
//! (open fds, threads, resident memory), for the admission tests and the figures in
//! `tests/peer_flood.rs`.
//!
//! Three shapes of peer that never authenticate: [`hold_silent`] connections that send
//! nothing, [`huge_hellos`] that declare a hello far larger than any real one and send a
//! part of it, and a [`Sustained`] flood that keeps a number of silent connections open,
//! replacing those the server closes, until it is dropped.

use raylet::rpc::frame::{FrameHeader, FrameKind, HEADER_LEN};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one flood connect may take; past it the attempt counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit: a flood holds more
/// sockets than the common soft limit of 1024.
pub fn raise_own_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Opens up to `n` connections spread round robin over `addrs` that never send a byte;
/// returns those the kernel accepted within the connect timeout.
pub fn hold_silent(addrs: &[SocketAddr], n: usize) -> Vec<TcpStream> {
    (0..n).filter_map(|i| TcpStream::connect_timeout(&addrs[i % addrs.len()], CONNECT_TIMEOUT).ok()).collect()
}

/// The header of a hello that declares a `declared`-byte payload.
pub fn hello_header(declared: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    FrameHeader { payload_len: declared, ..FrameHeader::control(FrameKind::Hello) }.encode(&mut h);
    h
}

/// Starts `n` threads, each of which connects to `addr`, declares a hello of `declared`
/// bytes, writes `send` bytes of it, then waits (up to `hold`) for the server to close.
/// Each thread returns how many payload bytes it managed to write.
pub fn huge_hellos(addr: SocketAddr, n: usize, declared: u32, send: usize, hold: Duration) -> Vec<JoinHandle<usize>> {
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else { return 0 };
                if s.write_all(&hello_header(declared)).is_err() {
                    return 0;
                }
                let block = vec![0x5au8; 1 << 20];
                let mut sent = 0;
                while sent < send {
                    let k = (send - sent).min(block.len());
                    if s.write_all(&block[..k]).is_err() {
                        break;
                    }
                    sent += k;
                }
                let _ = s.set_read_timeout(Some(hold));
                let _ = s.read(&mut [0u8; 64]);
                sent
            })
        })
        .collect()
}

/// Keeps `target` silent connections open over `addrs`, opening a new one for each the
/// server closes, until dropped (which closes them all).
#[derive(Debug)]
pub struct Sustained {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Sustained {
    /// Starts the flood.
    pub fn start(addrs: Vec<SocketAddr>, target: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::with_capacity(target);
            let mut next = 0usize;
            while !s.load(Relaxed) {
                conns.retain(is_open);
                let until = Instant::now() + Duration::from_millis(20);
                while conns.len() < target && Instant::now() < until && !s.load(Relaxed) {
                    next += 1;
                    if let Ok(c) = TcpStream::connect_timeout(&addrs[next % addrs.len()], CONNECT_TIMEOUT) {
                        let _ = c.set_nonblocking(true);
                        conns.push(c);
                        o.fetch_add(1, Relaxed);
                    }
                }
                if conns.len() >= target {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Self { stop, opened, thread: Some(thread) }
    }

    /// Connections opened so far (including those the server has closed since).
    pub fn opened(&self) -> usize {
        self.opened.load(Relaxed)
    }
}

impl Drop for Sustained {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the server has not closed a (non-blocking) connection yet.
fn is_open(c: &TcpStream) -> bool {
    match c.peek(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A `/proc/<pid>/status` field in its unit (kB for memory), 0 if absent.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Threads of `pid`.
pub fn thread_count(pid: u32) -> u64 {
    proc_status(pid, "Threads")
}
