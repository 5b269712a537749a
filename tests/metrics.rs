//! The Prometheus endpoint: `GET /metrics` answers the text exposition with per-shard
//! counters and the RPC latency histogram, bound to 127.0.0.1 by default; any other
//! request is a 404, and garbage on the port does not disturb it.

mod common;

use common::*;
use raylet::rpc::CallOpts;
use raylet::wire::rpc::{self as w, node_manager_service as nm};
use std::io::{Read, Write};
use std::time::Duration;

/// Value of the sample `name{labels}` exactly as rendered.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_are_prometheus_text_with_per_shard_counters_and_a_histogram() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        let token = node.ready.token();
        assert_eq!(node.ready.metrics_address.ip().to_string(), "127.0.0.1", "bound to loopback by default");

        const CALLS: u64 = 5;
        let mut c = node.node_manager(&token);
        for _ in 0..CALLS {
            nm::blocking::get_system_config(&mut c, &w::GetSystemConfigRequest::default(), CallOpts::default())
                .expect("GetSystemConfig");
        }

        let (code, text) = http_get(node.ready.metrics_address, "/metrics");
        assert_eq!(code, 200, "{text}");
        for family in [
            "# TYPE raylet_rpc_frames_in_total counter",
            "# TYPE raylet_rpc_frames_out_total counter",
            "# TYPE raylet_local_frames_in_total counter",
            "# TYPE raylet_rpc_connections gauge",
            "# TYPE raylet_rpc_calls_total counter",
            "# TYPE raylet_errors_total counter",
            "# TYPE raylet_rpc_latency_seconds histogram",
        ] {
            assert!(text.contains(family), "missing {family:?} in\n{text}");
        }
        for shard in 0..SHARDS {
            for name in ["raylet_rpc_frames_in_total", "raylet_local_frames_in_total", "raylet_rpc_connections"] {
                let key = format!("{name}{{shard=\"{shard}\"}}");
                assert!(sample(&text, &key).is_some(), "missing {key} in\n{text}");
            }
            let key = format!("raylet_errors_total{{shard=\"{shard}\",kind=\"rpc_bad_token\"}}");
            assert!(sample(&text, &key).is_some(), "missing {key}");
            // The histogram: cumulative buckets ending in +Inf == count.
            let buckets: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(&format!("raylet_rpc_latency_seconds_bucket{{shard=\"{shard}\",")))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
                .collect();
            assert!(buckets.len() > 2, "shard {shard} has histogram buckets");
            assert!(buckets.windows(2).all(|p| p[0] <= p[1]), "buckets are cumulative: {buckets:?}");
            let inf = sample(&text, &format!("raylet_rpc_latency_seconds_bucket{{shard=\"{shard}\",le=\"+Inf\"}}"));
            let count = sample(&text, &format!("raylet_rpc_latency_seconds_count{{shard=\"{shard}\"}}"));
            assert!(inf.is_some() && inf == count, "shard {shard}: +Inf bucket {inf:?} == count {count:?}");
            assert!(sample(&text, &format!("raylet_rpc_latency_seconds_sum{{shard=\"{shard}\"}}")).is_some());
        }
        let calls = metric_sum(&text, "raylet_rpc_calls_total", "method=\"NodeManagerService.GetSystemConfig\"");
        assert!(calls >= CALLS, "{calls} GetSystemConfig calls counted, want >= {CALLS}");
        assert!(metric_sum(&text, "raylet_rpc_latency_seconds_count", "") >= CALLS);
        assert!(metric_sum(&text, "raylet_rpc_frames_in_total", "") >= CALLS);
        node.assert_no_panic();
    });
}

#[test]
fn other_paths_and_methods_are_404() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        assert_eq!(http_get(node.ready.metrics_address, "/other").0, 404);
        assert_eq!(http_get(node.ready.metrics_address, "/").0, 404);
        let mut s = std::net::TcpStream::connect(node.ready.metrics_address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        assert_eq!(http_get(node.ready.metrics_address, "/metrics").0, 200, "still serving");
    });
}

#[test]
fn the_endpoint_is_bound_to_127_0_0_1_only() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        // Another loopback address reaches a wildcard listener but not one bound to
        // 127.0.0.1 alone.
        let other = std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), node.ready.metrics_address.port());
        match std::net::TcpStream::connect_timeout(&other, Duration::from_secs(5)) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
            Ok(_) => panic!("the metrics endpoint answers on {other}: it is not bound to 127.0.0.1 only"),
        }
        assert_eq!(http_get(node.ready.metrics_address, "/metrics").0, 200);
    });
}

#[test]
fn garbage_on_the_metrics_port_is_refused_and_it_keeps_serving() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let node = dir.start_head();
        // An endless header is cut off at its cap.
        let mut s = std::net::TcpStream::connect(node.ready.metrics_address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let junk: Vec<u8> = (0..16 << 10).map(|_| rng.u8(b'a'..=b'z')).collect();
        let _ = s.write_all(&junk);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 431"), "{resp}");
        // A malformed request line is a 404, not a crash.
        let mut s = std::net::TcpStream::connect(node.ready.metrics_address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"\x00\xff garbage\r\n\r\n").unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        // A client that connects and leaves.
        drop(std::net::TcpStream::connect(node.ready.metrics_address).unwrap());
        assert_eq!(http_get(node.ready.metrics_address, "/metrics").0, 200);
        dir.status();
        node.assert_no_panic();
    });
}
