//! The blocking RPC client against real nodes: an idempotent call rides out a node
//! restart (reconnect and retry with backoff within its deadline); a one-shot call to a
//! dead node fails fast with a transport error; a wrong token is a handshake refusal that
//! names the cause and is never retried, even by an idempotent call.

mod common;

use common::*;
use raylet::rpc::{BlockingClient, CallOpts, RpcError};
use raylet::wire::rpc::node_manager_service as nm;
use std::time::Duration;

const TOKEN: &str = "rpc-client-test-token";

fn head_with_token() -> NodeOpts {
    let mut o = NodeOpts::head();
    o.env.push(("RAYLET_AUTH_TOKEN".into(), TOKEN.into()));
    o
}

#[test]
fn an_idempotent_call_survives_a_node_restart() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let mut first = dir.start(&head_with_token());
        let addr = first.ready.node_manager_address;
        let mut c = BlockingClient::new(addr, TOKEN);
        nm::blocking::get_node_stats(&mut c, &Default::default(), CallOpts::once(Duration::from_secs(10)))
            .expect("first call");

        first.kill9();
        let err = nm::blocking::get_node_stats(&mut c, &Default::default(), CallOpts::once(Duration::from_secs(10)))
            .expect_err("a one-shot call to a dead node fails");
        assert!(matches!(err, RpcError::Io(_) | RpcError::Closed(_)), "a transport error, got {err:?}");

        // The retrying call starts while nothing listens; a new node then takes the port.
        let caller = std::thread::spawn(move || {
            nm::blocking::get_node_stats(&mut c, &Default::default(), CallOpts::idempotent(Duration::from_secs(60)))
        });
        let port = addr.port().to_string();
        let second = dir.start(&head_with_token().args(["--node-manager-port", port.as_str()]));
        assert_eq!(second.ready.node_manager_address, addr);
        let stats = caller.join().unwrap().expect("the idempotent call reconnects and succeeds");
        assert_eq!(raylet::ids::hex_encode(&stats.node_id), second.ready.node_id, "answered by the new node");
        second.assert_no_panic();
    });
}

#[test]
fn a_wrong_token_is_refused_once_and_not_retried() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start(&head_with_token());
        let before = errors_of(&node, "rpc_bad_token");
        // Even an idempotent call must not retry a refused hello: the verdict would not change.
        let mut c = BlockingClient::new(node.ready.node_manager_address, "not-the-token");
        let err =
            nm::blocking::get_system_config(&mut c, &Default::default(), CallOpts::idempotent(Duration::from_secs(20)))
                .expect_err("a wrong token is refused");
        match &err {
            RpcError::Handshake(msg) => assert!(msg.contains("wrong auth token"), "{msg}"),
            other => panic!("expected a handshake refusal, got {other:?}"),
        }
        wait_errors(&node, "rpc_bad_token", before + 1);
        assert_eq!(errors_of(&node, "rpc_bad_token"), before + 1, "exactly one attempt reached the server");

        // The CLI likewise fails on the first refusal, naming the cause.
        let gcs = node.ready.gcs_address.to_string();
        let out = dir.cli_with_env(&["status", "--address", &gcs], &[("RAYLET_AUTH_TOKEN", "not-the-token")]);
        assert!(!out.status.success());
        assert!(out.stderr.contains("wrong auth token"), "{}", out.stderr);
        wait_errors(&node, "rpc_bad_token", before + 2);
        assert_eq!(errors_of(&node, "rpc_bad_token"), before + 2, "the CLI made exactly one attempt");

        let mut good = BlockingClient::new(node.ready.node_manager_address, TOKEN);
        nm::blocking::get_system_config(&mut good, &Default::default(), CallOpts::once(Duration::from_secs(10)))
            .expect("the right token works");
        node.assert_no_panic();
    });
}
