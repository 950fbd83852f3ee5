//! nftables tests: the generated document (pure), the forwarding sysctls on a temp dir, and
//! a privileged round trip through the host's `nft` with a uniquely named table.

use super::*;
use crate::network::testnet;
use serde_json::{Value, json};

fn rules(network: &str) -> NetRules {
    NetRules {
        network: network.to_string(),
        bridge: "ctlbr0".to_string(),
        ipv4: Some((Ipv4Addr::new(10, 1, 2, 1), 24)),
        ipv4_nat: true,
        ipv6: None,
        ipv6_nat: false,
    }
}

fn commands(doc: &Nftables<'_>) -> Vec<Value> {
    serde_json::to_value(doc).expect("to value")["nftables"]
        .as_array()
        .expect("as array")
        .clone()
}

/// The expressions of every rule in `cmds` (added or listed), by chain.
fn rules_of(cmds: &[Value], chain: &str) -> Vec<Value> {
    cmds.iter()
        .filter_map(|c| c.get("add").unwrap_or(c).get("rule"))
        .filter(|r| r["chain"] == chain)
        .map(|r| r["expr"].clone())
        .collect()
}

fn masquerade(proto: &str, net: &str, len: u32) -> Value {
    json!([
        {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}},
                   "right": {"prefix": {"addr": net, "len": len}}}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                   "right": {"prefix": {"addr": net, "len": len}}}},
        {"masquerade": null}
    ])
}

#[test]
fn document_replaces_the_table_and_masquerades() {
    let cmds = commands(&ruleset(&rules("net0")).expect("rules"));
    let table = json!({"table": {"family": "inet", "name": "ctl_net0"}});
    assert_eq!(cmds[0], json!({"add": table}));
    assert_eq!(cmds[1], json!({"delete": table}));
    assert_eq!(cmds[2], json!({"add": table}));
    assert_eq!(
        rules_of(&cmds, "postrouting"),
        [masquerade("ip", "10.1.2.0", 24)]
    );
    let chain = cmds
        .iter()
        .find_map(|c| {
            c["add"]["chain"]
                .as_object()
                .filter(|c| c["name"] == "postrouting")
        })
        .expect("filter");
    assert_eq!(chain["type"], "nat");
    assert_eq!(chain["hook"], "postrouting");
    assert_eq!(chain["prio"], 100);
    assert_eq!(
        rules_of(&cmds, "forward"),
        [
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "ctlbr0"}}, {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ctlbr0"}}, {"accept": null}]),
        ]
    );
    let input = rules_of(&cmds, "input");
    assert_eq!(input.len(), 2);
    assert_eq!(
        input[0][1]["match"]["right"],
        json!({"set": [53, 67]}),
        "{input:?}"
    );
    assert_eq!(input[1][1]["match"]["left"]["payload"]["protocol"], "tcp");
    assert_eq!(input[1][1]["match"]["right"], 53);
}

#[test]
fn document_variants() {
    // No NAT: no nat chain at all.
    let mut r = rules("net0");
    r.ipv4_nat = false;
    let cmds = commands(&ruleset(&r).expect("ruleset"));
    assert!(rules_of(&cmds, "postrouting").is_empty());
    assert!(
        !cmds
            .iter()
            .any(|c| c["add"]["chain"]["name"] == "postrouting")
    );
    assert_eq!(rules_of(&cmds, "forward").len(), 2);

    // IPv6 with NAT, host bits cleared; DHCPv6 accepted.
    let mut r = rules("net0");
    r.ipv4 = Some((Ipv4Addr::new(10, 1, 2, 77), 24));
    r.ipv6 = Some(("fd42:1:2:3::1".parse().expect("parse"), 64));
    r.ipv6_nat = true;
    let cmds = commands(&ruleset(&r).expect("ruleset"));
    assert_eq!(
        rules_of(&cmds, "postrouting"),
        [
            masquerade("ip", "10.1.2.0", 24),
            masquerade("ip6", "fd42:1:2:3::", 64)
        ]
    );
    assert_eq!(
        rules_of(&cmds, "input")[0][1]["match"]["right"],
        json!({"set": [53, 67, 547]})
    );
}

#[test]
fn invalid_names_are_refused() {
    for (network, bridge) in [
        ("", "br0"),
        ("a b", "br0"),
        ("a\"b", "br0"),
        ("net0", ""),
        ("net0", "a-very-long-bridge"),
        ("net0", "br\"0"),
    ] {
        let mut r = rules(network);
        r.bridge = bridge.to_string();
        assert!(ruleset(&r).is_err(), "{network:?} {bridge:?} accepted");
    }
    assert!(remove_network("a;b").is_err());
    let mut r = rules("net0");
    r.ipv4 = Some((Ipv4Addr::new(10, 0, 0, 1), 33));
    assert!(ruleset(&r).is_err());
}

#[test]
fn finds_ctl_tables_in_a_listing() {
    let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "ctl_net0", "handle": 2}},
        {"table": {"family": "ip", "name": "ctl_other_family", "handle": 3}},
        {"table": {"family": "inet", "name": "filter", "handle": 4}},
        {"table": {"family": "inet", "name": "ctl_net1", "handle": 5}}]}"#;
    let doc: Nftables = serde_json::from_str(listing).expect("from str");
    assert_eq!(ctl_tables(&doc), ["ctl_net0", "ctl_net1"]);
}

/// A fake `/proc/sys/net` with the given values.
fn sysctl_tree(
    ip_forward: &str,
    all_forwarding: &str,
    accept_ra: &[(&str, &str)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("ipv4")).expect("join");
    std::fs::write(p.join("ipv4/ip_forward"), format!("{ip_forward}\n")).expect("join");
    for name in ["all", "default", "lo"] {
        std::fs::create_dir_all(p.join("ipv6/conf").join(name)).expect("join");
        std::fs::write(p.join("ipv6/conf").join(name).join("accept_ra"), "1\n").expect("join");
    }
    std::fs::write(
        p.join("ipv6/conf/all/forwarding"),
        format!("{all_forwarding}\n"),
    )
    .expect("join");
    for (iface, value) in accept_ra {
        std::fs::create_dir_all(p.join("ipv6/conf").join(iface)).expect("join");
        std::fs::write(
            p.join("ipv6/conf").join(iface).join("accept_ra"),
            format!("{value}\n"),
        )
        .expect("join");
    }
    dir
}

fn flag(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel))
        .expect("join")
        .trim()
        .to_string()
}

#[test]
fn forwarding_is_only_ever_turned_on() {
    let tree = sysctl_tree("0", "0", &[("eth0", "1"), ("eth1", "0"), ("eth2", "2")]);
    let p = tree.path();

    // Not asked: nothing changes.
    assert_eq!(
        enable_forwarding(p, false, false).expect("enable forwarding"),
        ForwardingChange::default()
    );
    assert_eq!(flag(p, "ipv4/ip_forward"), "0");

    let change = enable_forwarding(p, true, false).expect("enable forwarding");
    assert_eq!(
        change,
        ForwardingChange {
            ipv4: true,
            ipv6: false
        }
    );
    assert_eq!(flag(p, "ipv4/ip_forward"), "1");
    assert_eq!(flag(p, "ipv6/conf/all/forwarding"), "0");

    let change = enable_forwarding(p, true, true).expect("enable forwarding");
    assert_eq!(
        change,
        ForwardingChange {
            ipv4: false,
            ipv6: true
        }
    );
    assert_eq!(flag(p, "ipv6/conf/all/forwarding"), "1");
    assert_eq!(flag(p, "ipv6/conf/eth0/accept_ra"), "2");
    assert_eq!(flag(p, "ipv6/conf/eth1/accept_ra"), "0");
    assert_eq!(flag(p, "ipv6/conf/eth2/accept_ra"), "2");
    assert_eq!(flag(p, "ipv6/conf/lo/accept_ra"), "1");

    // Already on: nothing to do, and nothing is ever switched off.
    assert_eq!(
        enable_forwarding(p, true, true).expect("enable forwarding"),
        ForwardingChange::default()
    );
    assert_eq!(flag(p, "ipv4/ip_forward"), "1");

    // A missing tree is an error naming the file.
    let err = enable_forwarding(&p.join("nope"), true, false).expect_err("missing tree");
    assert!(err.to_string().contains("nope/ipv4/ip_forward"), "{err}");
}

// ------------------------------------------------------------------ privileged

/// Deletes the table on drop, so a failing test leaves no rules.
struct TableGuard(String);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = testnet::run("nft", &["delete", "table", "inet", &self.0]);
    }
}

/// `nft -j list table inet <table>` as JSON objects, or `None` if it does not exist.
fn listed(table: &str) -> Option<Vec<Value>> {
    let out = testnet::run("nft", &["-j", "list", "table", "inet", table]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("from slice");
    Some(v["nftables"].as_array().expect("as array").clone())
}

#[test]
fn apply_replace_and_remove_on_the_host() {
    if !testnet::root_or_skip("nftables round trip") {
        return;
    }
    let network = testnet::unique("t");
    let table = table_name(&network);
    let _guard = TableGuard(table.clone());
    let mut r = rules(&network);
    r.bridge = testnet::unique("ctnb");
    r.ipv6 = Some(("fd42:7::1".parse().expect("parse"), 64));
    r.ipv6_nat = true;

    apply_network(&r).expect("apply network");
    let objs = listed(&table).expect("table exists");
    assert_eq!(
        rules_of(&objs, "postrouting"),
        [
            masquerade("ip", "10.1.2.0", 24),
            masquerade("ip6", "fd42:7::", 64)
        ],
        "{objs:?}"
    );
    let forward = rules_of(&objs, "forward");
    assert_eq!(forward.len(), 2);
    assert_eq!(forward[0][0]["match"]["right"], r.bridge.as_str());
    assert_eq!(forward[0][1], json!({"accept": null}));
    let input = rules_of(&objs, "input");
    assert_eq!(input.len(), 2, "{input:?}");
    assert!(list_ctl_tables().expect("list ctl tables").contains(&table));

    // Idempotent: applying again gives the same table, not doubled rules.
    apply_network(&r).expect("apply network");
    let again = listed(&table).expect("listed");
    let count = |objs: &[Value]| objs.iter().filter(|o| o.get("rule").is_some()).count();
    assert_eq!(count(&again), count(&objs));
    assert_eq!(count(&again), 6);

    // A changed configuration replaces the rules: NAT off leaves no nat chain.
    r.ipv4_nat = false;
    r.ipv6_nat = false;
    apply_network(&r).expect("apply network");
    let changed = listed(&table).expect("listed");
    assert!(rules_of(&changed, "postrouting").is_empty());
    assert!(!changed.iter().any(|o| o["chain"]["name"] == "postrouting"));
    assert_eq!(rules_of(&changed, "forward").len(), 2);

    // Removed: gone, and removing again is fine.
    remove_network(&network).expect("remove network");
    assert!(listed(&table).is_none());
    assert!(!list_ctl_tables().expect("list ctl tables").contains(&table));
    remove_network(&network).expect("remove network");
}
