//! Raw ping-pong baselines, measured in the same run as the real cases: the floor the
//! kernel sets for one request/reply of the same sizes, with no framing, decoding,
//! executor or dispatch.
//!
//! - [`UdsPingPong`]: a Unix socketpair between the caller and one echo thread.
//! - [`TcpEcho`]: a loopback TCP listener (TCP_NODELAY) with a thread per connection;
//!   [`TcpEcho::connect`] gives a [`TcpPingPong`] client.
//!
//! The echo threads block in `read`, as a plain server would; the client writes the whole
//! request with one `write` and reads the whole reply with `read_exact`.

use crate::measure::pin_current;
use crate::Res;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of one request and of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Request bytes on the wire.
    pub(crate) req: usize,
    /// Reply bytes on the wire.
    pub(crate) resp: usize,
}

/// Reads `req` bytes, writes `resp` bytes, until the peer goes away.
fn echo<S: Read + Write>(mut s: S, sizes: Sizes) {
    let mut req = vec![0u8; sizes.req];
    let resp = vec![0x5au8; sizes.resp];
    while s.read_exact(&mut req).is_ok() {
        if s.write_all(&resp).is_err() {
            return;
        }
    }
}

fn one_rtt<S: Read + Write>(s: &mut S, req: &[u8], resp: &mut [u8]) -> Res<()> {
    s.write_all(req).map_err(|e| format!("baseline write: {e}"))?;
    s.read_exact(resp).map_err(|e| format!("baseline read: {e}"))
}

fn spawn_pinned<F: FnOnce() + Send + 'static>(name: &str, cpu: Option<usize>, f: F) -> Res<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(c) = cpu {
                if let Err(e) = pin_current(c) {
                    eprintln!("raylet-bench: {e}");
                }
            }
            f()
        })
        .map_err(|e| format!("spawning {name}: {e}"))
}

/// A socketpair ping-pong between this thread and an echo thread.
#[derive(Debug)]
pub(crate) struct UdsPingPong {
    client: UnixStream,
    req: Vec<u8>,
    resp: Vec<u8>,
    server: Option<JoinHandle<()>>,
}

impl UdsPingPong {
    /// Starts the echo thread, pinned to `server_cpu` if given.
    pub(crate) fn new(sizes: Sizes, server_cpu: Option<usize>) -> Res<Self> {
        let (client, server) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let server = spawn_pinned("raw-uds-echo", server_cpu, move || echo(server, sizes))?;
        Ok(Self { client, req: vec![0xa5; sizes.req], resp: vec![0; sizes.resp], server: Some(server) })
    }

    /// One round trip.
    pub(crate) fn rtt(&mut self) -> Res<()> {
        one_rtt(&mut self.client, &self.req, &mut self.resp)
    }
}

impl Drop for UdsPingPong {
    fn drop(&mut self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

/// Server ends of accepted connections (kept to shut them down) and their threads.
type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A loopback TCP echo server: one thread accepting, one per connection.
#[derive(Debug)]
pub(crate) struct TcpEcho {
    addr: SocketAddr,
    sizes: Sizes,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    conns: Conns,
}

impl TcpEcho {
    /// Listens on 127.0.0.1 port 0; connection threads are pinned to `server_cpu` if given.
    pub(crate) fn start(sizes: Sizes, server_cpu: Option<usize>) -> Res<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("raw TCP listener: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let acceptor = spawn_pinned("raw-tcp-accept", None, move || {
            for s in listener.incoming() {
                if stop2.load(Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                let _ = s.set_nodelay(true);
                let Ok(mine) = s.try_clone() else { continue };
                if let Ok(t) = spawn_pinned("raw-tcp-echo", server_cpu, move || echo(s, sizes)) {
                    conns2.lock().unwrap_or_else(|p| p.into_inner()).push((mine, t));
                }
            }
        })?;
        Ok(Self { addr, sizes, stop, acceptor: Some(acceptor), conns })
    }

    /// A new client connection.
    pub(crate) fn connect(&self) -> Res<TcpPingPong> {
        let s = TcpStream::connect(self.addr).map_err(|e| format!("raw TCP connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(TcpPingPong { s, req: vec![0xa5; self.sizes.req], resp: vec![0; self.sizes.resp] })
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for (s, t) in conns {
            let _ = s.shutdown(Shutdown::Both);
            let _ = t.join();
        }
    }
}

/// A client of [`TcpEcho`].
#[derive(Debug)]
pub(crate) struct TcpPingPong {
    s: TcpStream,
    req: Vec<u8>,
    resp: Vec<u8>,
}

impl TcpPingPong {
    /// One round trip.
    pub(crate) fn rtt(&mut self) -> Res<()> {
        one_rtt(&mut self.s, &self.req, &mut self.resp)
    }

    /// `n` round trips with up to `window` requests in flight (each request one `write`,
    /// each reply one `read_exact`), like a pipelined RPC client.
    pub(crate) fn pipelined(&mut self, n: usize, window: usize) -> Res<()> {
        let window = window.clamp(1, n.max(1));
        let (mut sent, mut got) = (0, 0);
        while got < n {
            while sent < n && sent - got < window {
                self.s.write_all(&self.req).map_err(|e| format!("baseline write: {e}"))?;
                sent += 1;
            }
            self.s.read_exact(&mut self.resp).map_err(|e| format!("baseline read: {e}"))?;
            got += 1;
        }
        Ok(())
    }
}
