//! The object plane's NodeManagerService RPCs and CLI: PinObjectIDs,
//! RequestObjectSpillage, FormatGlobalMemoryInfo / `raylet memory`, ObjectManagerService
//! FreeObjects, and `raylet object put|get|delete` (a delete frees every alive node's copy).

mod common;

use common::*;
use raylet::client::{ClientError, LocalClient};
use raylet::ids::ObjectId;
use raylet::local::codec::StoreError;
use raylet::rpc::{CallOpts, Code, RpcError};
use raylet::wire::rpc::*;
use std::time::Duration;

#[test]
fn pin_object_ids_pins_what_is_here_and_refuses_the_rest() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
        // An unpinned secondary-style copy: created with primary = false.
        let id = ObjectId::random();
        let w = c.create(id, 4, 0, false).unwrap();
        c.seal(w).unwrap();
        c.release(&[id]).unwrap();
        let mut nm = head.node_manager(&head.ready.token());
        let req =
            PinObjectIDsRequest { owner_address: None, object_ids: vec![id.to_vec(), ObjectId::random().to_vec()] };
        let r = node_manager_service::blocking::pin_object_i_ds(&mut nm, &req, CallOpts::default()).unwrap();
        assert_eq!(r.successes, vec![true, false]);
        let mem = dir.cli(&["memory", "--format", "json"]);
        assert!(mem.status.success(), "{}", mem.stderr);
        let v: serde_json::Value = serde_json::from_str(&mem.stdout).unwrap();
        let obj = v["objects"].as_array().unwrap().iter().find(|o| o["object_id"] == id.to_string()).unwrap();
        assert_eq!(obj["state"], "PINNED");
        let bad = PinObjectIDsRequest { owner_address: None, object_ids: vec![vec![1, 2, 3]] };
        assert!(node_manager_service::blocking::pin_object_i_ds(&mut nm, &bad, CallOpts::default()).is_err());
    });
}

#[test]
fn request_object_spillage_spills_and_a_get_restores() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let id = c.put(&data).unwrap();
        let mut nm = head.node_manager(&head.ready.token());
        let r = node_manager_service::blocking::request_object_spillage(
            &mut nm,
            &RequestObjectSpillageRequest { object_id: id.to_vec() },
            CallOpts::default(),
        )
        .unwrap();
        assert!(r.success, "spill refused");
        assert!(r.object_url.starts_with("spill-"), "url {}", r.object_url);
        let unknown = node_manager_service::blocking::request_object_spillage(
            &mut nm,
            &RequestObjectSpillageRequest { object_id: ObjectId::random().to_vec() },
            CallOpts::default(),
        )
        .unwrap();
        assert!(!unknown.success);
        let stats = node_stats(&head, &head.ready.token()).store_stats.unwrap();
        assert_eq!(stats.spilled_objects_total, 1);
        let v = c.get(&[id], Some(Duration::from_secs(10))).unwrap();
        assert!(v[0].as_ref().unwrap()[..] == data[..]);
    });
}

#[test]
fn a_create_that_nothing_can_make_room_for_fails_with_store_full() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        // Fallback off: with it, the create would go to a fallback segment instead.
        let head = dir.start(&NodeOpts::head().args(["--fallback-allocation-limit", "0"]));
        let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
        // Fill the 32 MiB store with objects this client keeps referenced (not evictable,
        // not spillable), then ask for more.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(c.create(ObjectId::random(), 9 << 20, 0, false).unwrap());
        }
        match c.create(ObjectId::random(), 8 << 20, 0, true) {
            Err(ClientError::Store { code: StoreError::ObjectStoreFull, message }) => {
                assert!(message.contains("no room"), "{message}")
            }
            other => panic!("expected ObjectStoreFull, got {other:?}"),
        }
        // Aborting what it held frees the room.
        for w in held {
            c.abort(w).unwrap();
        }
        c.create(ObjectId::random(), 8 << 20, 0, true).unwrap();
    });
}

#[test]
fn memory_and_object_cli_cover_two_nodes() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let file = dir.path().join("input.bin");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let put = dir.cli(&["object", "put", &file.display().to_string()]);
        assert!(put.status.success(), "{}", put.stderr);
        let id = put.stdout.trim().to_string();
        assert_eq!(id.len(), 56, "prints the object id: {:?}", put.stdout);
        // Get it on the other node: pulled across.
        let out = dir.path().join("output.bin");
        let get = dir.cli(&[
            "object",
            "get",
            &id,
            "--socket",
            &b.ready.socket.display().to_string(),
            "-o",
            &out.display().to_string(),
        ]);
        assert!(get.status.success(), "{}", get.stderr);
        assert!(std::fs::read(&out).unwrap() == data);
        let mem = dir.cli(&["memory", "--format", "json"]);
        assert!(mem.status.success(), "{}", mem.stderr);
        let v: serde_json::Value = serde_json::from_str(&mem.stdout).unwrap();
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "both nodes: {v}");
        let holders: Vec<_> =
            v["objects"].as_array().unwrap().iter().filter(|o| o["object_id"] == id.as_str()).collect();
        assert_eq!(holders.len(), 2, "the primary and the pulled copy: {v}");
        let table = dir.cli(&["memory"]);
        assert!(table.stdout.contains(&head.ready.node_id) && table.stdout.contains(&b.ready.node_id));
        // Deleting through the head frees the pulled copy on the other node too.
        let del = dir.cli(&["object", "delete", &id]);
        assert!(del.status.success(), "{}", del.stderr);
        assert!(del.stderr.is_empty(), "every node was reached: {}", del.stderr);
        let oid = ObjectId::from_hex(&id).unwrap();
        let mut on_b = LocalClient::connect_driver(&b.ready.socket).unwrap();
        assert!(!on_b.contains(&oid).unwrap(), "the pulled copy is gone from the other node");
        assert!(on_b.get(&[oid], Some(Duration::ZERO)).unwrap()[0].is_none());
        let v: serde_json::Value = serde_json::from_str(&dir.cli(&["memory", "--format", "json"]).stdout).unwrap();
        let left: Vec<_> = v["objects"].as_array().unwrap().iter().filter(|o| o["object_id"] == id.as_str()).collect();
        assert!(left.is_empty(), "deleted on both nodes: {v}");
    });
}

#[test]
fn object_delete_reports_an_unreachable_node_and_frees_the_others() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        // A long failure-detection timeout: the killed node stays ALIVE in the node table,
        // so the delete still tries it.
        let head = dir.start(&NodeOpts::head().args(["--heartbeat-timeout-ms", "120000"]));
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let mut c = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let id = LocalClient::connect_driver(&head.ready.socket).unwrap().put(&data).unwrap();
        for node in [&b, &c] {
            let mut cl = LocalClient::connect_driver(&node.ready.socket).unwrap();
            let v = cl.get(&[id], Some(Duration::from_secs(30))).unwrap();
            assert!(v[0].as_ref().unwrap()[..] == data[..], "pulled to {}", node.ready.node_id);
        }
        c.kill9();
        let del = dir.cli(&["object", "delete", &id.to_string()]);
        assert!(del.status.success(), "an unreachable node does not fail the delete: {}", del.stderr);
        assert!(del.stderr.contains(&c.ready.node_id), "names the node it could not reach: {}", del.stderr);
        for node in [&head, &b] {
            let mut cl = LocalClient::connect_driver(&node.ready.socket).unwrap();
            assert!(!cl.contains(&id).unwrap(), "freed on {}", node.ready.node_id);
        }
    });
}

#[test]
fn free_objects_rpc_deletes_what_is_here_ignores_unknown_ids_and_refuses_malformed_ones() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let (free, held) = (c.put(&data).unwrap(), c.put(&data).unwrap());
        let view = c.get(&[held], Some(Duration::from_secs(10))).unwrap().remove(0).unwrap();
        let mut om = raylet::rpc::BlockingClient::new(head.ready.object_manager_address, head.ready.token());
        let call = |om: &mut raylet::rpc::BlockingClient, ids: Vec<Vec<u8>>| {
            object_manager_service::blocking::free_objects(
                om,
                &FreeObjectsRequest { object_ids: ids },
                CallOpts::default(),
            )
        };
        // Held ids, and an id no node has: no error.
        call(&mut om, vec![free.to_vec(), held.to_vec(), ObjectId::random().to_vec()]).unwrap();
        assert!(!c.contains(&free).unwrap(), "the primary copy is unpinned and deleted");
        // One in use here is deleted when its client lets go, as a local delete is.
        assert!(c.contains(&held).unwrap(), "deferred while a client holds it");
        assert!(view[..] == data[..]);
        drop(view);
        assert!(!c.contains(&held).unwrap(), "deleted on release");
        match call(&mut om, vec![vec![1, 2, 3]]) {
            Err(RpcError::Status(s)) => assert_eq!(s.code, Code::InvalidArgument, "{s}"),
            other => panic!("a malformed id must be refused with InvalidArgument: {other:?}"),
        }
    });
}
