//! Router tests of networks, profiles and NIC devices over the fake worker: the wire shape,
//! the statuses of bad input (and that it changes nothing), leases, and the start order
//! (NICs set up after the init runs, rollback when that fails).

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::Value;

use super::{Harness, call, harness, run_op};

async fn create_net(h: &Harness, name: &str, cidr: &str) {
    let body = format!(r#"{{"name":"{name}","config":{{"ipv4.address":"{cidr}"}}}}"#);
    let (s, v) = call(&h.app, "POST", "/1.0/networks", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn launch(h: &Harness, name: &str, devices: &str) -> Value {
    let body = format!(
        r#"{{"name":"{name}","source":{{"type":"image","alias":"busybox"}},"devices":{devices},"start":true}}"#
    );
    run_op(&h.app, "POST", "/1.0/instances", &body).await
}

fn calls_with(h: &Harness, prefix: &str) -> Vec<String> {
    h.worker
        .calls()
        .into_iter()
        .filter(|c| c.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn network_crud_and_refusals() {
    let h = harness().await;
    create_net(&h, "n1", "10.50.0.1/24").await;
    assert_eq!(
        calls_with(&h, "ensure_bridge"),
        ["ensure_bridge n1 Some((10.50.0.1, 24)) None"]
    );
    let (s, v) = call(&h.app, "GET", "/1.0/networks/n1", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"]["config"]["ipv4.address"], "10.50.0.1/24");
    assert_eq!(v["metadata"]["config"]["ipv4.nat"], "true");
    assert_eq!(v["metadata"]["managed"], true);
    assert_eq!(v["metadata"]["status"], "Created");
    let (_, v) = call(&h.app, "GET", "/1.0/networks", "").await;
    assert_eq!(v["metadata"], serde_json::json!(["/1.0/networks/n1"]));

    // Bad input: 4xx, no bridge made.
    let before = h.worker.calls().len();
    let bad = [
        (
            r#"{"name":"n2","config":{"ipv4.address":"10.50.0.77/16"}}"#,
            400,
        ),
        (r#"{"name":"n1","config":{}}"#, 409),
        (r#"{"name":"waytoolongbridgename","config":{}}"#, 400),
        (r#"{"name":"n3","type":"macvlan"}"#, 400),
        (r#"{"name":"n3","config":{"bogus":"1"}}"#, 400),
        (
            r#"{"name":"n3","config":{"ipv4.address":"10.60.0.0/24"}}"#,
            400,
        ),
    ];
    for (body, code) in bad {
        let (s, v) = call(&h.app, "POST", "/1.0/networks", body).await;
        assert_eq!(s.as_u16(), code, "{body}: {v}");
        assert_eq!(v["type"], "error");
    }
    assert_eq!(h.worker.calls().len(), before, "{:?}", h.worker.calls());

    // A host route collides too.
    h.worker
        .host_subnets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((
            "10.70.0.0"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            16,
        ));
    let (s, _) = call(
        &h.app,
        "POST",
        "/1.0/networks",
        r#"{"name":"n4","config":{"ipv4.address":"10.70.3.1/24"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // `auto` picks a /24 in 10/8 that collides with nothing.
    let (s, v) = call(&h.app, "POST", "/1.0/networks", r#"{"name":"n5"}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = call(&h.app, "GET", "/1.0/networks/n5", "").await;
    let auto = v["metadata"]["config"]["ipv4.address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(auto.starts_with("10.") && auto.ends_with(".1/24"), "{auto}");
    assert!(
        !auto.starts_with("10.50.0.") && !auto.starts_with("10.70."),
        "{auto}"
    );

    let (s, _) = call(
        &h.app,
        "PATCH",
        "/1.0/networks/n5",
        r#"{"config":{"bridge.mtu":"1400"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.worker.calls().iter().any(|c| c
        == &format!(
            "ensure_bridge n5 Some(({}, 24)) Some(1400)",
            auto.trim_end_matches("/24")
        )));
    let (s, _) = call(&h.app, "DELETE", "/1.0/networks/n5", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(calls_with(&h, "delete_bridge").contains(&"delete_bridge n5".to_string()));
    let (s, _) = call(&h.app, "GET", "/1.0/networks/n5", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&h.app, "DELETE", "/1.0/networks/n5", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nics_get_leases_and_are_set_up_after_the_init_runs() {
    let h = harness().await;
    create_net(&h, "n1", "10.51.0.1/24").await;
    let op = launch(
        &h,
        "c1",
        r#"{"eth0":{"type":"nic","network":"n1"},"eth1":{"type":"nic","network":"n1","ipv4.address":"10.51.0.50"}}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let calls = h.worker.calls();
    let spawn = calls.iter().position(|c| c == "spawn_init c1");
    let nics = calls.iter().position(|c| c.starts_with("setup_nics"));
    assert!(spawn < nics && nics.is_some(), "{calls:?}");
    let setup = &calls[nics.unwrap_or_default()];
    assert!(
        setup.ends_with("eth0@n1:10.51.0.2/24,eth1@n1:10.51.0.50/24"),
        "{setup}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("write_resolver")
            && c.contains("10.51.0.1")
            && c.ends_with("ctl"))
    );

    // A stable MAC, kept in volatile.
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    let mac = v["metadata"]["config"]["volatile.eth0.hwaddr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(mac.starts_with("00:16:3e:"), "{v}");

    // Leases list both, static and dynamic.
    let (_, v) = call(&h.app, "GET", "/1.0/networks/n1/leases", "").await;
    let leases: Vec<(String, String)> = v["metadata"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["address"].as_str().unwrap_or_default().to_string(),
                l["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        leases,
        [
            ("10.51.0.2".to_string(), "dynamic".to_string()),
            ("10.51.0.50".to_string(), "static".to_string())
        ]
    );
    assert_eq!(v["metadata"][0]["hostname"], "c1");
    assert_eq!(v["metadata"][0]["hwaddr"], mac.as_str());

    // State shows the addresses the NICs got.
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1/state", "").await;
    assert_eq!(
        v["metadata"]["network"]["eth0"]["addresses"][0]["address"],
        "10.51.0.2"
    );
    assert!(
        v["metadata"]["network"]["eth0"]["host_name"]
            .as_str()
            .is_some_and(|h| h.starts_with("veth")),
        "{v}"
    );

    // Restart keeps the same address and MAC.
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"restart","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let last = calls_with(&h, "setup_nics");
    assert_eq!(last.len(), 2);
    assert!(
        last[1].ends_with("eth0@n1:10.51.0.2/24,eth1@n1:10.51.0.50/24"),
        "{last:?}"
    );
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(
        v["metadata"]["config"]["volatile.eth0.hwaddr"],
        mac.as_str()
    );

    // NICs of a running instance change live: a new one is plugged in with a lease, a
    // removed one's interface goes and its lease with it.
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"devices":{"eth2":{"type":"nic","network":"n1"}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let last = calls_with(&h, "setup_nics");
    assert_eq!(last.len(), 3);
    assert!(last[2].ends_with("eth2@n1:10.51.0.3/24"), "{last:?}");
    let (_, leases) = call(&h.app, "GET", "/1.0/networks/n1/leases", "").await;
    assert!(leases.to_string().contains("10.51.0.3"), "{leases}");
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"devices":{"eth2":{}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let removed = calls_with(&h, "remove_nics");
    assert!(
        removed.last().is_some_and(|c| c.ends_with(" eth2")),
        "{removed:?}"
    );
    let (_, leases) = call(&h.app, "GET", "/1.0/networks/n1/leases", "").await;
    assert!(!leases.to_string().contains("10.51.0.3"), "{leases}");

    // In use: the network cannot go.
    let (s, v) = call(&h.app, "DELETE", "/1.0/networks/n1", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/1.0/instances/c1")
    );

    // Delete releases the leases.
    run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"stop","force":true}"#,
    )
    .await;
    run_op(&h.app, "DELETE", "/1.0/instances/c1", "").await;
    let (_, v) = call(&h.app, "GET", "/1.0/networks/n1/leases", "").await;
    assert_eq!(v["metadata"], serde_json::json!([]));
    let (s, _) = call(&h.app, "DELETE", "/1.0/networks/n1", "").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_nics_are_refused_before_anything_exists() {
    let h = harness().await;
    create_net(&h, "n1", "10.52.0.1/24").await;
    h.worker
        .bridges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert("hostbr".into());
    let op = launch(
        &h,
        "c1",
        r#"{"eth0":{"type":"nic","network":"n1","ipv4.address":"10.52.0.9"}}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let before = h.worker.calls().len();
    let cases = [
        r#"{"eth0":{"type":"nic","network":"nope"}}"#,
        r#"{"eth0":{"type":"nic","nictype":"bridged","parent":"nobridge"}}"#,
        r#"{"eth0":{"type":"nic","network":"n1","ipv4.address":"10.99.0.5"}}"#,
        r#"{"eth0":{"type":"nic","network":"n1","ipv4.address":"10.52.0.9"}}"#,
        r#"{"eth0":{"type":"nic","network":"n1","ipv4.address":"10.52.0.1"}}"#,
        r#"{"eth0":{"type":"nic","nictype":"bridged","parent":"hostbr","ipv4.address":"10.52.0.3"}}"#,
        r#"{"eth0":{"type":"nic","network":"n1","flavour":"x"}}"#,
        r#"{"root":{"type":"unix-char","path":"/dev/x"}}"#,
    ];
    for devices in cases {
        let body = format!(
            r#"{{"name":"c2","source":{{"type":"image","alias":"busybox"}},"devices":{devices}}}"#
        );
        let (s, v) = call(&h.app, "POST", "/1.0/instances", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{devices}: {v}");
    }
    let (s, _) = call(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c2","source":{"type":"image","alias":"busybox"},"profiles":["nope"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(h.worker.calls().len(), before, "{:?}", h.worker.calls());
    let (_, v) = call(&h.app, "GET", "/1.0/instances", "").await;
    assert_eq!(v["metadata"], serde_json::json!(["/1.0/instances/c1"]));

    // An unmanaged host bridge works as a parent (no address from ctl).
    let op = launch(
        &h,
        "c3",
        r#"{"eth0":{"type":"nic","nictype":"bridged","parent":"hostbr"}}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(
        calls_with(&h, "setup_nics")
            .iter()
            .any(|c| c.ends_with("eth0@hostbr:"))
    );
}

#[tokio::test]
async fn failed_nic_setup_kills_the_init_and_keeps_nothing() {
    let h = harness().await;
    create_net(&h, "n1", "10.53.0.1/24").await;
    h.worker.fail_nics.store(true, Ordering::SeqCst);
    let op = launch(&h, "c1", r#"{"eth0":{"type":"nic","network":"n1"}}"#).await;
    assert_eq!(op["status"], "Failure", "{op}");
    let calls = h.worker.calls();
    let after: Vec<&String> = calls
        .iter()
        .skip_while(|c| !c.starts_with("setup_nics"))
        .collect();
    assert!(
        after.iter().any(|c| c.starts_with("signal 1000 9")),
        "{calls:?}"
    );
    assert!(after.iter().any(|c| *c == "remove_cgroup c1"), "{calls:?}");
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(v["metadata"]["status"], "Stopped");
    // A second start works and keeps the address.
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"start"}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let (_, v) = call(&h.app, "GET", "/1.0/networks/n1/leases", "").await;
    assert_eq!(v["metadata"][0]["address"], "10.53.0.2");
}

#[tokio::test]
async fn the_default_profile_carries_nics() {
    let h = harness().await;
    create_net(&h, "n1", "10.54.0.1/24").await;
    let (s, v) = call(&h.app, "GET", "/1.0/profiles", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"], serde_json::json!(["/1.0/profiles/default"]));
    for (body, code) in [
        (
            r#"{"devices":{"eth0":{"type":"nic","network":"nope"}}}"#,
            400,
        ),
        (
            r#"{"config":{"volatile.eth0.hwaddr":"00:16:3e:00:00:01"}}"#,
            400,
        ),
        (
            r#"{"devices":{"eth0":{"type":"nic","network":"n1","ipv4.address":"10.54.0.5"}}}"#,
            400,
        ),
        (r#"{"devices":{"eth0":{"type":"nic","network":"n1"}}}"#, 200),
    ] {
        let (s, v) = call(&h.app, "PUT", "/1.0/profiles/default", body).await;
        assert_eq!(s.as_u16(), code, "{body}: {v}");
    }
    let (s, _) = call(&h.app, "GET", "/1.0/profiles/other", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let op = launch(&h, "c1", "{}").await;
    assert_eq!(op["status"], "Success", "{op}");
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(v["metadata"]["expanded_devices"]["eth0"]["network"], "n1");
    assert_eq!(v["metadata"]["devices"], serde_json::json!({}));
    assert_eq!(v["metadata"]["profiles"], serde_json::json!(["default"]));
    assert!(
        calls_with(&h, "setup_nics")
            .iter()
            .any(|c| c.ends_with("eth0@n1:10.54.0.2/24"))
    );
    // An instance without profiles gets no NIC.
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c2","source":{"type":"image","alias":"busybox"},"profiles":[],"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c2", "").await;
    assert_eq!(v["metadata"]["expanded_devices"], serde_json::json!({}));
    let (_, v) = call(&h.app, "GET", "/1.0/profiles/default", "").await;
    assert_eq!(
        v["metadata"]["used_by"],
        serde_json::json!(["/1.0/instances/c1"])
    );
    let (s, _) = call(&h.app, "DELETE", "/1.0/networks/n1", "").await;
    assert_eq!(s, StatusCode::CONFLICT);
}
