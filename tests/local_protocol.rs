//! The local protocol against a real node: driver registration, port announcement,
//! graceful disconnect with reply, what GetNodeStats reports about connected clients, the
//! refusals the node owes a bad registration, and the socket directory's permissions.
//!
//! Workers: the worker pool (another issue) will only accept startup tokens it issued, so
//! here only the refusal of a negative token is tested for workers.

mod common;

use common::*;
use raylet::client::{ClientError, LocalClient};
use raylet::ids::{JobId, WorkerId};
use raylet::local::codec::{self, ClientKind, LocalMessage, Register};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

const JOB: JobId = JobId([0, 0, 0, 1]);

fn driver_stats(node: &Node, token: &str) -> (u32, Vec<raylet::wire::rpc::WorkerStats>) {
    let s = node_stats(node, token);
    (s.num_drivers, s.core_workers_stats.into_iter().filter(|w| w.worker_type == "DRIVER").collect())
}

#[test]
fn a_driver_registers_announces_its_port_and_disconnects() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        assert_eq!(driver_stats(&node, &token).0, 0);

        let mut c = LocalClient::connect(&node.ready.socket).expect("connect");
        let node_id = c.register_driver(JOB).expect("register driver");
        assert_eq!(node_id.to_string(), node.ready.node_id, "the reply names this node");
        assert_eq!(c.node_id(), Some(node_id));

        let (n, drivers) = driver_stats(&node, &token);
        assert_eq!(n, 1, "GetNodeStats counts the connected driver");
        let me = drivers.iter().find(|w| w.worker_id == c.worker_id().to_vec()).expect("the driver is listed");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.job_id, JOB.to_vec());
        assert_eq!(me.port, 0, "no port announced yet");

        c.announce_port(41234, true).expect("a driver's port announcement is acknowledged");
        let (_, drivers) = driver_stats(&node, &token);
        let me = drivers.iter().find(|w| w.worker_id == c.worker_id().to_vec()).unwrap();
        assert_eq!(me.port, 41234);

        c.disconnect().expect("disconnect is acknowledged with a reply");
        wait_for("the driver to leave GetNodeStats", Duration::from_secs(10), || {
            let (n, list) = driver_stats(&node, &token);
            Ok((n == 0 && list.is_empty()).then_some(()))
        });
        node.assert_no_panic();
    });
}

#[test]
fn a_dropped_connection_is_forgotten_and_clients_spread_over_shards() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut c = LocalClient::connect(&node.ready.socket).expect("connect");
            c.register_driver(JOB).expect("register");
            clients.push(c);
        }
        let (n, drivers) = driver_stats(&node, &token);
        assert_eq!(n, 4);
        let mut shards: Vec<u32> = drivers.iter().map(|d| d.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        assert_eq!(shards, vec![0, 1], "connections are handed to both shards");

        // Closing without a goodbye is cleaned up like a disconnect.
        drop(clients);
        wait_for("every dropped driver to be forgotten", Duration::from_secs(10), || {
            Ok((driver_stats(&node, &token).0 == 0).then_some(()))
        });
        node.assert_no_panic();
    });
}

#[test]
fn bad_registrations_are_refused_with_a_reason() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();

        // A worker must present the startup token it was started with.
        let mut w = LocalClient::connect(&node.ready.socket).expect("connect");
        match w.register_worker(-1) {
            Err(ClientError::Refused(why)) => assert!(why.contains("token"), "reason names the token: {why}"),
            other => panic!("a negative startup token must be refused, got {other:?}"),
        }
        // A driver needs a job id.
        let mut d = LocalClient::connect(&node.ready.socket).expect("connect");
        match d.register_driver(JobId::NIL) {
            Err(ClientError::Refused(why)) => assert!(why.contains("job"), "reason names the job id: {why}"),
            other => panic!("a driver without a job must be refused, got {other:?}"),
        }

        // One worker id cannot register twice.
        let id = WorkerId([9; 28]);
        let reg = |job| {
            LocalMessage::Register(Register {
                kind: ClientKind::Driver,
                worker_id: id,
                pid: 1,
                startup_token: -1,
                job_id: job,
                ip_address: "127.0.0.1".into(),
            })
        };
        let mut first = LocalClient::connect(&node.ready.socket).expect("connect");
        first.send(&reg(JOB)).unwrap();
        assert!(matches!(first.recv().unwrap(), LocalMessage::RegisterReply(r) if r.success));
        let mut dup = LocalClient::connect(&node.ready.socket).expect("connect");
        dup.send(&reg(JOB)).unwrap();
        match dup.recv().unwrap() {
            LocalMessage::RegisterReply(r) => {
                assert!(!r.success && r.failure_reason.contains("already registered"), "{r:?}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A second registration on the same connection closes it.
        first.send(&reg(JobId([0, 0, 0, 2]))).unwrap();
        assert!(first.recv().is_err(), "a second registration closes the connection");

        // Announcing a port before registering closes the connection.
        let mut early = raw_local(&node);
        std::io::Write::write_all(&mut early, &codec::encode(&LocalMessage::AnnounceWorkerPort { port: 1 })).unwrap();
        local_expect_closed(&mut early, Duration::from_secs(10));

        wait_for("no driver to remain", Duration::from_secs(10), || {
            Ok((driver_stats(&node, &token).0 == 0).then_some(()))
        });
        local_still_serves(&node);
        node.assert_no_panic();
    });
}

#[test]
fn the_socket_lives_in_a_private_directory() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let sock = &node.ready.socket;
        let meta = std::fs::symlink_metadata(sock).expect("socket exists");
        assert!(meta.file_type().is_socket(), "{} is a socket", sock.display());
        let parent = sock.parent().unwrap();
        let mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the socket directory {} has mode {mode:o}", parent.display());
    });
}
