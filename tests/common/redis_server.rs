//! A real `redis-server` for a test (`scripts/install-deps.sh` installs it): on a free
//! loopback port, in its own temp dir, with no persistence (`--save '' --appendonly no`),
//! so a restart comes back empty. Killed (SIGKILL) and reaped on drop, registered for the
//! hard timeout of [`super::with_timeout`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running (or killed, until [`RedisServer::restart`]) Redis.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a free port").port()
}

impl RedisServer {
    /// Starts one in `dir` (which must outlive it) on a free port and waits until it answers.
    pub fn start(dir: &Path) -> Self {
        // A port picked and released can be taken before Redis binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = Self { dir: dir.to_path_buf(), port: free_port(), child: None };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:port/namespace`.
    pub fn url(&self, namespace: &str) -> String {
        format!("redis://{}/{namespace}", self.addr())
    }

    /// SIGKILLs it and waits until it is gone; its data is gone with it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            super::unregister_child(c.id());
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn().unwrap_or_else(|e| panic!("redis-server restart: {e}"));
    }

    /// Its log (printed by callers when a test fails).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.port))).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut c = Command::new("redis-server");
        c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"]);
        let child = super::spawn_registered(c, &self.dir.join(format!("redis-{}.stderr", self.port)));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(true) = self.ping() {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("exited with {st}: {}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!("no PONG within 10 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it answers PING.
    pub fn ping(&self) -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf)?;
        Ok(&buf == b"+PONG\r\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-server {} log ---\n{}", self.port, self.log());
        }
        self.kill9();
    }
}
