//! Network namespaces for multi-node tests. [`NetBed::new`] makes N namespaces ("nodes"),
//! each with one veth link (`eth0`, address `198.18.0.<i + 1>/24`) to a bridge that lives
//! in a namespace of its own ("hub"), so nothing touches the host's network: the
//! addresses exist only inside the bed. A link can be rate-shaped ([`NetBed::shape`], tc
//! tbf both ways; this kernel has no netem) and blackholed ([`NetBed::blackhole`], an
//! nftables table in the node's namespace that silently drops everything on `eth0`). A
//! raylet runs in a namespace through `ip netns exec` ([`NetBed::node_opts`]), with the
//! bed's auth token and its namespace's address.
//!
//! Names carry the test process's pid and a counter, so parallel tests and other users of
//! the machine never collide. Dropping the bed kills what still runs in its namespaces and
//! deletes them (with their links, qdiscs and nftables tables), also when a test panics:
//! declare the bed before the nodes, so the nodes' guards run first.
//!
//! Needs root, iproute2 and nftables (`scripts/test.sh` installs nftables when missing).

use super::{base_env, spawn_registered, wait_child, CliOutput, NodeOpts, TestDir, RAYLET};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static BEDS: AtomicU32 = AtomicU32::new(0);

/// N namespaces on one bridge; see the module docs.
#[derive(Debug)]
pub struct NetBed {
    prefix: String,
    /// Every namespace created so far (the hub first), deleted on drop.
    created: Vec<String>,
    nodes: usize,
    token: String,
}

/// Runs `cmd args`, panicking with its stderr when it fails.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NetBed {
    /// `n` namespaces on a bridge. Panics with a clear message without root or nftables.
    pub fn new(n: usize) -> Self {
        assert!((1..250).contains(&n), "a bed has 1 to 249 nodes");
        assert!(nix::unistd::geteuid().is_root(), "network-namespace tests need root");
        assert!(
            Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()),
            "nft is missing: install nftables (scripts/test.sh does)"
        );
        let k = BEDS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("rlt{}x{k}", std::process::id());
        let token = (0..32).map(|_| format!("{:x}", fastrand::u8(..16))).collect();
        let mut bed = Self { prefix, created: Vec::new(), nodes: n, token };
        let hub = bed.hub();
        bed.add_netns(&hub);
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = bed.name(i);
            bed.add_netns(&ns);
            let port = format!("v{i}");
            // Both ends are created inside the bed's namespaces: no name ever appears in
            // the host's namespace.
            run("ip", &["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run("ip", &["-n", &hub, "link", "set", &port, "master", "br0"]);
            run("ip", &["-n", &hub, "link", "set", &port, "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", bed.ip(i)), "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        bed
    }

    fn add_netns(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.created.push(name.to_string());
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// The namespace of node `i`.
    pub fn name(&self, i: usize) -> String {
        assert!(i < self.nodes, "no node {i} in a bed of {}", self.nodes);
        format!("{}n{i}", self.prefix)
    }

    /// Node `i`'s address (198.18.0.0/15, inside the bed only).
    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, i as u8 + 1))
    }

    /// The cluster auth token every node and CLI call of the bed uses.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Shapes node `i`'s link to `mbit` Mbit/s each way (tc tbf on both ends of its veth).
    pub fn shape(&self, i: usize, mbit: u32) {
        let rate = format!("{mbit}mbit");
        // A burst of about 10 ms at the rate (at least 32 KiB), and room for half a second
        // of queue, so the link paces TCP rather than dropping it.
        let burst = format!("{}", (u64::from(mbit) * 1_000_000 / 8 / 100).max(32 << 10));
        for (ns, dev) in [(self.hub(), format!("v{i}")), (self.name(i), "eth0".to_string())] {
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "500ms",
                ],
            );
        }
    }

    fn table(&self) -> String {
        format!("{}_blackhole", self.prefix)
    }

    /// Silently drops every packet in and out of node `i`'s `eth0` (its processes see a
    /// peer that stopped answering, not a closed connection).
    pub fn blackhole(&self, i: usize) {
        let t = self.table();
        let script = format!(
            "table inet {t} {{\n\
             chain in {{ type filter hook input priority -100; policy accept; iifname \"eth0\" drop; }}\n\
             chain out {{ type filter hook output priority -100; policy accept; oifname \"eth0\" drop; }}\n\
             }}\n"
        );
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.name(i), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        std::io::Write::write_all(c.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success(), "nft refused the blackhole table");
    }

    /// Lifts [`Self::blackhole`] from node `i`.
    pub fn restore(&self, i: usize) {
        run("ip", &["netns", "exec", &self.name(i), "nft", "delete", "table", "inet", &self.table()]);
    }

    /// Bytes node `i`'s `eth0` has received.
    pub fn rx_bytes(&self, i: usize) -> u64 {
        let out = run("ip", &["-n", &self.name(i), "-j", "-s", "link", "show", "eth0"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        v[0]["stats64"]["rx"]["bytes"].as_u64().expect("rx bytes in ip -j output")
    }

    /// `opts` for a raylet in node `i`'s namespace: run through `ip netns exec`, on its
    /// address, with the bed's token.
    pub fn node_opts(&self, i: usize, opts: NodeOpts) -> NodeOpts {
        let mut opts = opts.args(["--node-ip-address".to_string(), self.ip(i).to_string()]);
        opts.wrap = vec!["ip".into(), "netns".into(), "exec".into(), self.name(i)];
        opts.env.push(("RAYLET_AUTH_TOKEN".into(), self.token.clone()));
        opts
    }

    /// `raylet <args>` run in node `i`'s namespace with the bed's token, like
    /// [`TestDir::cli`].
    pub fn cli(&self, dir: &TestDir, i: usize, args: &[&str]) -> CliOutput {
        let stderr_path = dir.next_log(&format!("cli-ns{i}-{}", args.first().copied().unwrap_or("none")));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name(i), RAYLET]).args(args);
        c.args(["--temp-dir", &dir.path().display().to_string()]);
        base_env(&mut c);
        c.env("RAYLET_LOG", "warn").env("RAYLET_AUTH_TOKEN", &self.token);
        let child = spawn_registered(c, &stderr_path);
        let (status, stdout) = wait_child(child, Duration::from_secs(60));
        CliOutput { status, stdout, stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default() }
    }

    /// Runs `f` on a thread that has entered node `i`'s network namespace (so it reaches
    /// the bed's addresses and the node's loopback-bound metrics endpoint).
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name(i));
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for NetBed {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Whatever a test started in the namespace and did not reap yet.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}
