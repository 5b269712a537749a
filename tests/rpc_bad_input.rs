//! Garbage on the TCP listeners (node manager, object manager, and the head's GCS port).
//! A bad hello or a malformed frame closes only that connection and bumps the counter of
//! its kind; a well-framed request the server cannot serve (unknown service or method,
//! undecodable payload, unwanted trailer) gets an error reply and the connection stays
//! usable. After each case the same port still serves a good client and `raylet status`
//! still answers; nothing panics.

mod common;

use common::*;
use prost::Message;
use raylet::rpc::frame::{encode_frame, FrameHeader, FrameKind, HEADER_LEN, PROTOCOL_VERSION};
use raylet::rpc::{BlockingClient, CallOpts};
use raylet::wire::rpc::{self as w, node_info_gcs_service as gcs_svc, node_manager_service as nm_svc};
use std::net::SocketAddr;
use std::time::Duration;

/// One listener and a call it must keep serving.
struct Port {
    name: &'static str,
    addr: SocketAddr,
    /// (service, method, payload) of a good call, if the port serves any service yet.
    good: Option<(u16, u16, Vec<u8>)>,
    /// Whether requests on this port may carry a trailer at all.
    trailers: bool,
}

fn ports(node: &Node) -> Vec<Port> {
    vec![
        Port {
            name: "node manager",
            addr: node.ready.node_manager_address,
            good: Some((nm_svc::SERVICE_ID, nm_svc::method::GET_SYSTEM_CONFIG, Vec::new())),
            trailers: true,
        },
        Port {
            name: "GCS",
            addr: node.ready.gcs_address,
            good: Some((
                gcs_svc::SERVICE_ID,
                gcs_svc::method::GET_ALL_NODE_INFO,
                w::GetAllNodeInfoRequest { known_version: 0, wait_ms: 0 }.encode_to_vec(),
            )),
            trailers: false,
        },
        Port { name: "object manager", addr: node.ready.object_manager_address, good: None, trailers: true },
    ]
}

/// Proves `port` still serves a well-behaved client.
fn still_serves(port: &Port, token: &str) {
    let mut c = BlockingClient::new(port.addr, token);
    match &port.good {
        Some((svc, method, payload)) => {
            c.call_raw(*svc, *method, payload, CallOpts::once(Duration::from_secs(10)))
                .unwrap_or_else(|e| panic!("{}: a good call failed afterwards: {e}", port.name));
        }
        None => c
            .connect(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: a good hello failed afterwards: {e}", port.name)),
    }
}

fn raw_header(h: FrameHeader, payload_len: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    FrameHeader { payload_len, ..h }.encode(&mut out);
    out
}

fn hello_bytes(version: u32, token: &str) -> Vec<u8> {
    let hello = w::Hello { protocol_version: version, auth_token: token.into() };
    encode_frame(FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec(), 0)
}

/// What a closing case sends.
enum Send {
    /// Before any hello.
    Raw(Vec<u8>),
    /// After a successful hello.
    AfterHello(Vec<u8>),
}

struct Case {
    name: &'static str,
    send: Send,
    /// Shut down our write side after sending (the server sees EOF).
    half_close: bool,
    kind: &'static str,
    /// The server first answers with a refusing HelloAck.
    refused_hello: bool,
}

fn closing_cases(token: &str) -> Vec<Case> {
    let mut rng = fastrand::Rng::with_seed(0xbad);
    let random: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let mut bad_magic = raw_header(FrameHeader::control(FrameKind::Hello), 0);
    bad_magic[..4].copy_from_slice(b"XXXX");
    let huge_hello = raw_header(FrameHeader::control(FrameKind::Hello), 1 << 31).to_vec();
    let big_hello = raw_header(FrameHeader::control(FrameKind::Hello), 64 << 20).to_vec();
    let request = FrameHeader::request(nm_svc::SERVICE_ID, nm_svc::method::GET_SYSTEM_CONFIG, 1, 1000);
    let huge_request = raw_header(request, 1 << 31).to_vec();
    let mut mid_frame = raw_header(request, 100).to_vec();
    mid_frame.extend_from_slice(&[0u8; 10]);
    let response = encode_frame(FrameHeader::reply_to(&request, FrameKind::Response), &[], 0);
    let mut reserved = raw_header(request, 0);
    reserved[13] = 1;
    let mut bad_magic_later = raw_header(request, 0);
    bad_magic_later[..4].copy_from_slice(b"GET ");
    let case = |name, send, half_close, kind, refused_hello| Case { name, send, half_close, kind, refused_hello };
    vec![
        case("wrong token", Send::Raw(hello_bytes(PROTOCOL_VERSION, "wrong-token")), false, "rpc_bad_token", true),
        case("empty token", Send::Raw(hello_bytes(PROTOCOL_VERSION, "")), false, "rpc_bad_token", true),
        case(
            "wrong protocol version",
            Send::Raw(hello_bytes(PROTOCOL_VERSION + 99, token)),
            false,
            "rpc_bad_hello",
            true,
        ),
        case("random bytes", Send::Raw(random), false, "rpc_bad_hello", false),
        case("bad magic", Send::Raw(bad_magic.to_vec()), false, "rpc_bad_hello", false),
        case("hello length 2^31", Send::Raw(huge_hello), false, "rpc_bad_hello", false),
        case("hello length 64 MiB (over the 4 KiB hello cap)", Send::Raw(big_hello), false, "rpc_bad_hello", true),
        case("a request before the hello", Send::Raw(encode_frame(request, &[], 0)), false, "rpc_bad_hello", false),
        case(
            "disconnect in the middle of the hello",
            Send::Raw(hello_bytes(PROTOCOL_VERSION, token)[..HEADER_LEN + 3].to_vec()),
            true,
            "rpc_bad_hello",
            false,
        ),
        case("request length 2^31", Send::AfterHello(huge_request), false, "rpc_bad_frame", false),
        case("bad magic after the hello", Send::AfterHello(bad_magic_later.to_vec()), false, "rpc_bad_frame", false),
        case("non-zero reserved bits", Send::AfterHello(reserved.to_vec()), false, "rpc_bad_frame", false),
        case("a response frame from a client", Send::AfterHello(response), false, "rpc_bad_frame", false),
        case("disconnect in the middle of a request", Send::AfterHello(mid_frame), true, "rpc_io", false),
    ]
}

#[test]
fn malformed_input_closes_only_that_connection() {
    with_timeout(Duration::from_secs(240), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        for port in ports(&node) {
            for case in closing_cases(&token) {
                let what = format!("{} port, {}", port.name, case.name);
                let before = errors_of(&node, case.kind);
                let mut c = match &case.send {
                    Send::Raw(bytes) => {
                        let mut c = RawRpc::connect(port.addr);
                        c.send(bytes);
                        c
                    }
                    Send::AfterHello(bytes) => {
                        let mut c = RawRpc::handshake(port.addr, &token);
                        c.send(bytes);
                        c
                    }
                };
                if case.half_close {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                }
                let frames = c.expect_closed(Duration::from_secs(10));
                if case.refused_hello {
                    assert_eq!(frames.len(), 1, "{what}: one refusing hello ack, got {frames:?}");
                    assert_eq!(frames[0].header.kind, FrameKind::HelloAck, "{what}");
                    let ack = w::HelloAck::decode(frames[0].payload.as_slice()).expect("hello ack decodes");
                    assert!(!ack.ok && !ack.message.is_empty(), "{what}: {ack:?}");
                } else {
                    assert!(frames.is_empty(), "{what}: garbage must not be answered: {frames:?}");
                }
                wait_errors(&node, case.kind, before + 1);
                still_serves(&port, &token);
                dir.try_status().unwrap_or_else(|e| panic!("{what}: status failed afterwards: {e}"));
            }
        }
        node.assert_no_panic();
    });
}

fn expect_error(c: &mut RawRpc, call_id: u64, code: raylet::rpc::Code, what: &str) {
    match c.read(Duration::from_secs(10)) {
        Read2::Frame(f) => {
            assert_eq!(f.header.kind, FrameKind::Error, "{what}: expected an error reply, got {:?}", f.header);
            assert_eq!(f.header.call_id, call_id, "{what}: the error answers the call");
            let st = raylet::rpc::Status::from_proto(w::RpcStatus::decode(f.payload.as_slice()).expect("status"));
            assert_eq!(st.code, code, "{what}: {st}");
        }
        Read2::Closed => panic!("{what}: the server closed instead of answering with an error"),
    }
}

#[test]
fn requests_the_server_cannot_serve_get_error_replies() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        for port in ports(&node) {
            let before = errors_of(&node, "rpc_bad_request");
            let mut c = RawRpc::handshake(port.addr, &token);
            let mut expected = 0;
            let (svc, good_method) = port.good.as_ref().map(|(s, m, _)| (*s, *m)).unwrap_or((nm_svc::SERVICE_ID, 1));

            c.send_request(999, 1, 10, &[]);
            expect_error(&mut c, 10, raylet::rpc::Code::Unimplemented, &format!("{}: unknown service", port.name));
            expected += 1;
            if port.good.is_some() {
                c.send_request(svc, 999, 11, &[]);
                expect_error(&mut c, 11, raylet::rpc::Code::Unimplemented, &format!("{}: unknown method", port.name));
                c.send_request(svc, good_method, 12, &[0xff; 11]);
                expect_error(
                    &mut c,
                    12,
                    raylet::rpc::Code::InvalidArgument,
                    &format!("{}: undecodable payload", port.name),
                );
                expected += 2;
            }
            if port.trailers {
                // A trailer on a method that takes none is discarded and refused; the
                // stream stays in sync for the next call.
                let h = FrameHeader::request(svc, good_method, 13, 1000);
                let mut f = encode_frame(h, &[], 64);
                f.extend_from_slice(&[7u8; 64]);
                f.extend_from_slice(&raylet::checksum::crc32c(&[7u8; 64]).to_le_bytes());
                c.send(&f);
                expect_error(
                    &mut c,
                    13,
                    raylet::rpc::Code::InvalidArgument,
                    &format!("{}: unwanted trailer", port.name),
                );
                expected += 1;
            }
            if let Some((svc, method, payload)) = &port.good {
                c.send_request(*svc, *method, 14, payload);
                match c.read(Duration::from_secs(10)) {
                    Read2::Frame(f) => {
                        assert_eq!(f.header.kind, FrameKind::Response, "{}: {:?}", port.name, f.header);
                        assert_eq!(f.header.call_id, 14);
                    }
                    Read2::Closed => panic!("{}: the connection did not survive the error replies", port.name),
                }
            }
            wait_errors(&node, "rpc_bad_request", before + expected);
            still_serves(&port, &token);
            dir.try_status().unwrap_or_else(|e| panic!("{}: status failed afterwards: {e}", port.name));
        }
        node.assert_no_panic();
    });
}

#[test]
fn a_peer_that_never_says_hello_is_dropped() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        let before = errors_of(&node, "rpc_bad_hello");
        let ports = ports(&node);
        // Open them all first so the servers' hello timeouts (5 s) run concurrently.
        let mut silent: Vec<RawRpc> = ports.iter().map(|p| RawRpc::connect(p.addr)).collect();
        for (c, port) in silent.iter_mut().zip(&ports) {
            let frames = c.expect_closed(Duration::from_secs(30));
            assert!(frames.is_empty(), "{}: {frames:?}", port.name);
        }
        wait_errors(&node, "rpc_bad_hello", before + ports.len() as u64);
        for port in &ports {
            still_serves(port, &token);
        }
        dir.status();
        node.assert_no_panic();
    });
}
