//! Garbage on the local socket: each kind closes only the offending connection, with a
//! counted error; a registered bystander keeps its connection, a new client still
//! registers, `raylet status` still answers, and nothing panics.

mod common;

use common::*;
use raylet::client::LocalClient;
use raylet::ids::JobId;
use raylet::local::codec::{self, LocalMessage, COOKIE, HEADER_LEN};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn header(cookie: u64, msg_type: u64, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&cookie.to_le_bytes());
    h.extend_from_slice(&msg_type.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// A payload of a valid frame, without its header.
fn payload_of(m: &LocalMessage) -> Vec<u8> {
    codec::encode(m)[HEADER_LEN..].to_vec()
}

/// The union discriminant of `RegisterClientRequest`.
const REGISTER: u64 = 1;

struct Case {
    name: &'static str,
    /// Bytes to send; `half_close` then shuts down our write side (EOF for the server).
    bytes: Vec<u8>,
    half_close: bool,
    /// Which error counter it must bump.
    kind: &'static str,
}

fn cases() -> Vec<Case> {
    let announce = payload_of(&LocalMessage::AnnounceWorkerPort { port: 7 });
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let random: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let mut truncated = header(COOKIE, REGISTER, 100);
    truncated.extend_from_slice(&[0u8; 10]);
    let mut unverifiable = header(COOKIE, REGISTER, 16);
    unverifiable.extend_from_slice(&[0xff; 16]);
    let mut mismatch = header(COOKIE, REGISTER, announce.len() as u64);
    mismatch.extend_from_slice(&announce);
    let reply_from_client = codec::encode(&LocalMessage::DisconnectReply);
    vec![
        Case {
            name: "wrong cookie",
            bytes: header(0xdead_beef, REGISTER, 0),
            half_close: false,
            kind: "local_bad_frame",
        },
        Case {
            name: "unknown message type",
            bytes: header(COOKIE, 200, 0),
            half_close: false,
            kind: "local_bad_frame",
        },
        Case { name: "truncated frame then EOF", bytes: truncated, half_close: true, kind: "local_io" },
        Case {
            name: "length of 2^63",
            bytes: header(COOKIE, REGISTER, 1 << 63),
            half_close: false,
            kind: "local_bad_frame",
        },
        Case { name: "random bytes", bytes: random, half_close: false, kind: "local_bad_frame" },
        Case {
            name: "FlatBuffer that fails verification",
            bytes: unverifiable,
            half_close: false,
            kind: "local_bad_frame",
        },
        Case {
            name: "header type disagrees with the payload",
            bytes: mismatch,
            half_close: false,
            kind: "local_bad_frame",
        },
        Case {
            name: "peer disconnects mid-header",
            bytes: header(COOKIE, REGISTER, 8)[..10].to_vec(),
            half_close: true,
            kind: "local_io",
        },
        Case {
            name: "a reply-only message from a client",
            bytes: reply_from_client,
            half_close: false,
            kind: "local_bad_frame",
        },
    ]
}

#[test]
fn every_kind_of_garbage_closes_only_that_connection() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        // A registered driver that must be untouched by everyone else's garbage.
        let mut bystander = LocalClient::connect(&node.ready.socket).expect("connect");
        bystander.register_driver(JobId([0, 0, 0, 3])).expect("register bystander");

        for case in cases() {
            let before = errors_of(&node, case.kind);
            let mut s = raw_local(&node);
            let _ = s.write_all(&case.bytes);
            if case.half_close {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            let got = local_expect_closed(&mut s, Duration::from_secs(10));
            assert!(got.is_empty(), "{}: the raylet answered garbage with {} bytes", case.name, got.len());
            wait_errors(&node, case.kind, before + 1);

            // Everyone else is still served.
            local_still_serves(&node);
            let status = dir.try_status().unwrap_or_else(|e| panic!("{}: status failed afterwards: {e}", case.name));
            assert_eq!(node_entry(&status, &node.ready.node_id).unwrap()["state"], "ALIVE");
            bystander
                .announce_port(40000, true)
                .unwrap_or_else(|e| panic!("{}: the bystander lost its connection: {e}", case.name));
        }
        assert_eq!(node_stats(&node, &token).num_drivers, 1, "only the bystander is registered");
        bystander.disconnect().expect("the bystander disconnects cleanly");
        node.assert_no_panic();
    });
}

/// Registers a driver over a raw connection (so the test can send garbage on it later).
fn register_raw(node: &Node, id: u8) -> UnixStream {
    let mut s = raw_local(node);
    s.write_all(&codec::encode(&LocalMessage::Register(codec::Register {
        kind: codec::ClientKind::Driver,
        worker_id: raylet::ids::WorkerId([id; 28]),
        pid: i64::from(std::process::id()),
        startup_token: -1,
        job_id: JobId([0, 0, 0, id]),
        ip_address: "127.0.0.1".into(),
    })))
    .unwrap();
    let mut h = [0u8; HEADER_LEN];
    std::io::Read::read_exact(&mut s, &mut h).unwrap();
    let h = codec::decode_header(&h, 1 << 20).unwrap();
    let mut p = vec![0u8; h.len as usize];
    std::io::Read::read_exact(&mut s, &mut p).unwrap();
    match codec::decode_message(h.msg_type, &p).unwrap() {
        LocalMessage::RegisterReply(r) => assert!(r.success, "{r:?}"),
        other => panic!("expected a registration reply, got {other:?}"),
    }
    s
}

#[test]
fn garbage_from_a_registered_client_releases_what_it_held() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        let mut good = LocalClient::connect(&node.ready.socket).expect("connect");
        good.register_driver(JobId([0, 0, 0, 4])).expect("register");
        let mut bad = register_raw(&node, 5);
        assert_eq!(node_stats(&node, &token).num_drivers, 2);

        // The registered client turns to garbage: its connection closes and it is forgotten.
        bad.write_all(&header(COOKIE, 99, 0)).unwrap();
        local_expect_closed(&mut bad, Duration::from_secs(10));
        wait_for("the misbehaving driver to be forgotten", Duration::from_secs(10), || {
            Ok((node_stats(&node, &token).num_drivers == 1).then_some(()))
        });
        good.disconnect().expect("the other driver is unaffected");
        dir.status();
        node.assert_no_panic();
    });
}
