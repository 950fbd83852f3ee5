//! Router tests of profiles over the fake worker: create/rename/delete rules, the expansion
//! of config (profiles in order, then the instance), and a profile change applied to every
//! instance using it live, or to none.

use super::*;

const MIB: u64 = 1 << 20;

async fn profile(h: &Harness, body: &str) {
    let (s, v) = call(&h.app, "POST", "/1.0/profiles", body).await;
    assert_eq!(s, StatusCode::OK, "{body}: {v}");
}

async fn launch_with(h: &Harness, name: &str, profiles: &str, config: &str) -> Value {
    let body = format!(
        r#"{{"name":"{name}","source":{{"type":"image","alias":"busybox"}},
            "profiles":{profiles},"config":{config},"start":true}}"#
    );
    run_op(&h.app, "POST", "/1.0/instances", &body).await
}

async fn get(h: &Harness, uri: &str) -> Value {
    let (s, v) = call(&h.app, "GET", uri, "").await;
    assert_eq!(s, StatusCode::OK, "{uri}: {v}");
    v["metadata"].clone()
}

fn limits_calls(h: &Harness) -> Vec<String> {
    h.worker
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("apply_limits"))
        .collect()
}

fn memory(mib: u64) -> String {
    format!("Some({})", mib * MIB)
}

#[tokio::test]
async fn profiles_are_created_renamed_and_deleted_by_incus_rules() {
    let h = harness().await;
    profile(
        &h,
        r#"{"name":"p1","description":"small","config":{"limits.memory":"64MiB"}}"#,
    )
    .await;
    for (body, code) in [
        (r#"{"name":"p1"}"#, 409),
        (r#"{"name":""}"#, 400),
        (r#"{"name":".."}"#, 400),
        (r#"{"name":"a/b"}"#, 400),
        (r#"{"name":"a b"}"#, 400),
        (
            r#"{"name":"p2","config":{"volatile.eth0.hwaddr":"00:16:3e:00:00:01"}}"#,
            400,
        ),
        (r#"{"name":"p2","config":{"limits.memory":"lots"}}"#, 400),
        (r#"{"name":"p2","config":{"nope":"1"}}"#, 400),
        (r#"{"name":"p2","devices":{"d":{"type":"disk"}}}"#, 400),
        (
            r#"{"name":"p2","devices":{"eth0":{"type":"nic","network":"nope"}}}"#,
            400,
        ),
        ("{", 400),
    ] {
        let (s, v) = call(&h.app, "POST", "/1.0/profiles", body).await;
        assert_eq!(s.as_u16(), code, "{body}: {v}");
    }
    // Nothing of the refused ones exists.
    assert_eq!(
        get(&h, "/1.0/profiles").await,
        json!(["/1.0/profiles/default", "/1.0/profiles/p1"])
    );
    let all = get(&h, "/1.0/profiles?recursion=1").await;
    assert_eq!(all[1]["name"], "p1");
    assert_eq!(all[1]["description"], "small");
    assert_eq!(all[1]["config"]["limits.memory"], "64MiB");

    let op = launch_with(&h, "c1", r#"["default","p1"]"#, "{}").await;
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(
        get(&h, "/1.0/profiles/p1").await["used_by"],
        json!(["/1.0/instances/c1"])
    );
    for (method, uri, body, code) in [
        ("DELETE", "/1.0/profiles/default", "", 403),
        ("POST", "/1.0/profiles/default", r#"{"name":"d2"}"#, 403),
        ("DELETE", "/1.0/profiles/p1", "", 400),
        ("DELETE", "/1.0/profiles/nope", "", 404),
        ("POST", "/1.0/profiles/nope", r#"{"name":"x"}"#, 404),
        ("POST", "/1.0/profiles/p1", r#"{"name":"default"}"#, 409),
        ("POST", "/1.0/profiles/p1", r#"{"name":"a/b"}"#, 400),
        ("PUT", "/1.0/profiles/nope", "{}", 404),
    ] {
        let (s, v) = call(&h.app, method, uri, body).await;
        assert_eq!(s.as_u16(), code, "{method} {uri} {body}: {v}");
    }
    let (_, v) = call(&h.app, "DELETE", "/1.0/profiles/p1", "").await;
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/1.0/instances/c1"),
        "{v}"
    );

    // Rename: the instance's list follows, the old name is gone.
    let (s, v) = call(&h.app, "POST", "/1.0/profiles/p1", r#"{"name":"small"}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let c1 = get(&h, "/1.0/instances/c1").await;
    assert_eq!(c1["profiles"], json!(["default", "small"]));
    assert_eq!(c1["expanded_config"]["limits.memory"], "64MiB");
    let (s, _) = call(&h.app, "GET", "/1.0/profiles/p1", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Once unused, it goes.
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"profiles":["default"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(&h.app, "DELETE", "/1.0/profiles/small", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        get(&h, "/1.0/profiles").await,
        json!(["/1.0/profiles/default"])
    );
}

#[tokio::test]
async fn later_profiles_win_the_instance_wins_and_start_uses_the_expansion() {
    let h = harness().await;
    profile(
        &h,
        r#"{"name":"p1","config":{"limits.memory":"64MiB","user.a":"p1","environment.X":"1"}}"#,
    )
    .await;
    profile(
        &h,
        r#"{"name":"p2","config":{"limits.memory":"80MiB","user.b":"p2"}}"#,
    )
    .await;
    let op = launch_with(&h, "c1", r#"["default","p1","p2"]"#, r#"{"user.b":"own"}"#).await;
    assert_eq!(op["status"], "Success", "{op}");
    let c1 = get(&h, "/1.0/instances/c1").await;
    assert_eq!(c1["expanded_config"]["limits.memory"], "80MiB");
    assert_eq!(c1["expanded_config"]["user.a"], "p1");
    assert_eq!(c1["expanded_config"]["user.b"], "own");
    // The profile's keys are not copied into the instance's own config.
    assert_eq!(c1["config"].get("limits.memory"), None);
    assert!(
        h.worker
            .calls()
            .contains(&format!("create_cgroup c1 {}", memory(80))),
        "{:?}",
        h.worker.calls()
    );
    // The other order: p1 wins.
    let op = launch_with(&h, "c2", r#"["p2","p1"]"#, "{}").await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(
        h.worker
            .calls()
            .contains(&format!("create_cgroup c2 {}", memory(64)))
    );

    // A profile that does not exist, or an expansion that is invalid: nothing is created.
    for (profiles, config) in [
        (r#"["nope"]"#, "{}"),
        (r#"["p1"]"#, r#"{"limits.cpu":"x"}"#),
    ] {
        let body = format!(
            r#"{{"name":"c3","source":{{"type":"image","alias":"busybox"}},"profiles":{profiles},"config":{config}}}"#
        );
        let (s, v) = call(&h.app, "POST", "/1.0/instances", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let (s, _) = call(&h.app, "GET", "/1.0/instances/c3", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_profile_change_reaches_every_running_user_live() {
    let h = harness().await;
    profile(&h, r#"{"name":"p1","config":{"limits.memory":"64MiB"}}"#).await;
    for name in ["c1", "c2"] {
        let op = launch_with(&h, name, r#"["default","p1"]"#, "{}").await;
        assert_eq!(op["status"], "Success", "{op}");
    }
    // c3 overrides the key: the profile's value does not reach it.
    let op = launch_with(
        &h,
        "c3",
        r#"["default","p1"]"#,
        r#"{"limits.memory":"128MiB"}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/p1",
        r#"{"config":{"limits.memory":"96MiB"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        limits_calls(&h),
        [
            format!("apply_limits c1 {}", memory(96)),
            format!("apply_limits c2 {}", memory(96)),
        ]
    );
    for name in ["c1", "c2"] {
        let c = get(&h, &format!("/1.0/instances/{name}")).await;
        assert_eq!(c["expanded_config"]["limits.memory"], "96MiB");
    }
    assert_eq!(
        get(&h, "/1.0/instances/c3").await["expanded_config"]["limits.memory"],
        "128MiB"
    );

    // Assigning and removing profiles on an instance changes its limits live too.
    profile(&h, r#"{"name":"big","config":{"limits.memory":"200MiB"}}"#).await;
    // PUT is an operation (as in Incus).
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1",
        r#"{"profiles":["default","p1","big"]}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(
        limits_calls(&h).last(),
        Some(&format!("apply_limits c1 {}", memory(200)))
    );
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"profiles":["default"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        limits_calls(&h).last(),
        Some(&"apply_limits c1 None".to_string())
    );
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"profiles":["default","nope"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        get(&h, "/1.0/instances/c1").await["profiles"],
        json!(["default"])
    );
}

#[tokio::test]
async fn a_profile_change_one_user_refuses_changes_nothing() {
    let h = harness().await;
    profile(&h, r#"{"name":"p1","config":{"limits.memory":"64MiB"}}"#).await;
    for name in ["c1", "c2"] {
        let op = launch_with(&h, name, r#"["default","p1"]"#, "{}").await;
        assert_eq!(op["status"], "Success", "{op}");
    }
    let unchanged = |v: Value| {
        assert_eq!(v["config"], json!({"limits.memory": "64MiB"}), "{v}");
    };

    // A key that cannot change while c1 runs: 400 naming an instance, nothing applied.
    let before = limits_calls(&h).len();
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/p1",
        r#"{"config":{"raw.init":"/bin/sh","limits.memory":"96MiB"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("instance \"c1\"") && msg.contains("raw.init"),
        "{msg}"
    );
    assert_eq!(limits_calls(&h).len(), before);
    unchanged(get(&h, "/1.0/profiles/p1").await);

    // The second user's cgroup refuses: the first one's limit is put back, the profile
    // stays, the error is a 500.
    h.worker
        .fail_limits
        .lock()
        .map(|mut f| f.insert("c2".to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/p1",
        r#"{"config":{"limits.memory":"96MiB"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(
        limits_calls(&h)[before..],
        [
            format!("apply_limits c1 {}", memory(96)),
            format!("apply_limits c2 {}", memory(96)),
            // c2's own undo, then c1's.
            format!("apply_limits c2 {}", memory(64)),
            format!("apply_limits c1 {}", memory(64)),
        ]
    );
    unchanged(get(&h, "/1.0/profiles/p1").await);
    for name in ["c1", "c2"] {
        let c = get(&h, &format!("/1.0/instances/{name}")).await;
        assert_eq!(c["expanded_config"]["limits.memory"], "64MiB");
    }
}

#[tokio::test]
async fn a_profile_nic_is_hot_plugged_into_running_users_and_recorded() {
    let h = harness().await;
    let (s, v) = call(
        &h.app,
        "POST",
        "/1.0/networks",
        r#"{"name":"n1","config":{"ipv4.address":"10.61.0.1/24"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    profile(&h, r#"{"name":"net"}"#).await;
    let op = launch_with(&h, "c1", r#"["net"]"#, "{}").await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(!h.worker.calls().iter().any(|c| c.starts_with("setup_nics")));
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/net",
        r#"{"devices":{"eth0":{"type":"nic","network":"n1"}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let plugged: Vec<String> = h
        .worker
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("setup_nics"))
        .collect();
    assert_eq!(plugged.len(), 1, "{plugged:?}");
    assert!(plugged[0].ends_with("eth0@n1:10.61.0.2/24"), "{plugged:?}");
    // The NIC's MAC and host-side name are the instance's, recorded with the profile.
    let c1 = get(&h, "/1.0/instances/c1").await;
    assert!(c1["config"]["volatile.eth0.hwaddr"].is_string(), "{c1}");
    assert!(c1["config"]["volatile.eth0.host_name"].is_string(), "{c1}");
    assert_eq!(c1["expanded_devices"]["eth0"]["network"], "n1");
    assert_eq!(
        get(&h, "/1.0/networks/n1/leases").await[0]["address"],
        "10.61.0.2"
    );

    // Removed from the profile: unplugged, its volatile keys and lease gone.
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/net",
        r#"{"devices":{"eth0":{}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        h.worker
            .calls()
            .iter()
            .any(|c| c.starts_with("remove_nics") && c.ends_with(" eth0")),
        "{:?}",
        h.worker.calls()
    );
    let c1 = get(&h, "/1.0/instances/c1").await;
    assert_eq!(c1["config"].get("volatile.eth0.hwaddr"), None, "{c1}");
    assert_eq!(get(&h, "/1.0/networks/n1/leases").await, json!([]));
}

#[tokio::test]
async fn a_nic_that_cannot_be_plugged_leaves_the_profile_and_its_users_as_they_were() {
    let h = harness().await;
    let (s, v) = call(
        &h.app,
        "POST",
        "/1.0/networks",
        r#"{"name":"n1","config":{"ipv4.address":"10.62.0.1/24"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    profile(&h, r#"{"name":"net"}"#).await;
    for name in ["c1", "c2"] {
        let op = launch_with(&h, name, r#"["net"]"#, "{}").await;
        assert_eq!(op["status"], "Success", "{op}");
    }
    h.worker
        .fail_nics
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/profiles/net",
        r#"{"devices":{"eth0":{"type":"nic","network":"n1"}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(get(&h, "/1.0/profiles/net").await["devices"], json!({}));
    for name in ["c1", "c2"] {
        let c = get(&h, &format!("/1.0/instances/{name}")).await;
        assert_eq!(c["expanded_devices"], json!({}), "{c}");
        assert_eq!(c["config"].get("volatile.eth0.host_name"), None, "{c}");
    }
    assert_eq!(get(&h, "/1.0/networks/n1/leases").await, json!([]));
}
