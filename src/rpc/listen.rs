//! Binding a shard's share of a TCP port.
//!
//! Every shard binds the same port with `SO_REUSEPORT`. A shard pinned to one CPU also sets
//! `SO_INCOMING_CPU` to that CPU: Linux 6.2 and later then hand a new connection to the
//! listener of the CPU that processed its SYN, which for a loopback connect is the
//! connecting thread's CPU. So a peer shard on CPU c (another node on this machine) is
//! served by our shard on CPU c, the one that owns the same objects (`hash(id) % n` is the
//! same on both nodes): a chunk, a claim and a seal stay on one CPU instead of crossing to
//! another vCPU at every hop (a cross-CPU wake-up costs about 40 us on a small VM). Older
//! kernels, and CPUs with no listener of their own, fall back to the usual hash.

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

/// The one CPU this thread may run on, if it is pinned to exactly one.
pub fn pinned_cpu() -> Option<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let mut cpus = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    match (cpus.next(), cpus.next()) {
        (Some(cpu), None) => Some(cpu),
        _ => None,
    }
}

/// Binds this executor's listener on `addr` (`SO_REUSEPORT`, backlog 1024), steering to
/// it the connections made from `cpu` when given.
pub fn bind_shared(addr: SocketAddr, cpu: Option<usize>) -> io::Result<TcpListener> {
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_port(true)?;
    if let Some(cpu) = cpu {
        // Only a steering hint: a kernel without it still serves the port.
        if let Err(e) = sk.set_cpu_affinity(cpu) {
            tracing::debug!(%addr, cpu, "SO_INCOMING_CPU not set: {e}");
        }
    }
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    let fd = sk.into_raw_fd();
    // SAFETY: `fd` is the bound, listening TCP socket just released by `sk`; ownership
    // moves to the glommio listener, which closes it on drop, and nothing else uses it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;
    use glommio::{LocalExecutorBuilder, Placement};
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    fn pin_this_thread(cpu: usize) {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
    }

    /// Connects from `cpu` and sends `byte`; returns the connection's local port.
    fn connect_from(cpu: usize, addr: SocketAddr, byte: u8) -> u16 {
        std::thread::spawn(move || {
            pin_this_thread(cpu);
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&[byte]).unwrap();
            s.local_addr().unwrap().port()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_loopback_connection_goes_to_the_listener_pinned_to_the_connecting_cpu() {
        let cpus: Vec<usize> = {
            let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).take(2).collect()
        };
        if cpus.len() < 2 {
            eprintln!("skipped: steering needs two CPUs, this process may use {cpus:?}");
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (accepted_tx, accepted) = mpsc::channel::<(usize, u16)>();
        let (bound_tx, bound) = mpsc::channel::<Option<usize>>();
        let mut executors = Vec::new();
        for &cpu in &cpus {
            let (accepted_tx, bound_tx) = (accepted_tx.clone(), bound_tx.clone());
            let ex = LocalExecutorBuilder::new(Placement::Fixed(cpu)).spawn(move || async move {
                let me = pinned_cpu();
                let l = bind_shared(addr, me).unwrap();
                bound_tx.send(me).unwrap();
                // Until a connection says 'q': report who served each one.
                loop {
                    let mut s = l.accept().await.unwrap();
                    let mut b = [0u8];
                    s.read_exact(&mut b).await.unwrap();
                    if b[0] == b'q' {
                        return;
                    }
                    accepted_tx.send((me.unwrap(), s.peer_addr().unwrap().port())).unwrap();
                }
            });
            executors.push(ex.unwrap());
        }
        for _ in &cpus {
            let me = bound.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(me.is_some(), "an executor placed on one CPU is pinned to it");
        }
        for round in 0..4 {
            for &cpu in &cpus {
                let port = connect_from(cpu, addr, b'c');
                let (served_by, peer) = accepted.recv_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(peer, port, "round {round}: one connection at a time");
                assert_eq!(served_by, cpu, "round {round}: a connection from CPU {cpu} went to CPU {served_by}");
            }
        }
        for &cpu in &cpus {
            connect_from(cpu, addr, b'q');
        }
        for ex in executors {
            ex.join().unwrap();
        }
    }
}
