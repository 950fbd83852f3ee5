//! One suite for both backends: every step takes a `&Store`, and the same steps run on a
//! fresh SQLite file and on a throwaway PostgreSQL server.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Long enough for a heartbeat taken just before to count as young on a busy machine.
const OFFLINE_MS: i64 = 500;
/// Comfortably longer than [`OFFLINE_MS`].
const PAST_OFFLINE: Duration = Duration::from_millis(700);
const MINUTE: i64 = 60_000;

fn new_member(name: &str) -> NewMember {
    NewMember {
        name: name.into(),
        address: format!("{name}.test:8443"),
        fingerprint: format!("fp-{name}"),
        certificate: format!("PEM of {name}"),
        architecture: "x86_64".into(),
        description: format!("member {name}"),
    }
}

fn certificate(fingerprint: &str, name: &str) -> CertificateRow {
    CertificateRow {
        fingerprint: fingerprint.into(),
        kind: "client".into(),
        name: name.into(),
        certificate: format!("PEM {fingerprint}"),
        restricted: true,
        projects: vec!["default".into()],
        description: String::new(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `(instance, member)` pairs, by instance.
async fn placed(store: &Store) -> Result<Vec<(String, String)>, DbError> {
    Ok(store
        .instance_locations()
        .await?
        .into_iter()
        .map(|l| (l.name, l.member))
        .collect())
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Remove every instance, member (with its images), token, certificate and setting.
async fn clear(store: &Store) -> Result<(), DbError> {
    for l in store.instance_locations().await? {
        store.remove_instance(&l.name, &l.member).await?;
    }
    for m in store.members(MINUTE).await? {
        store.remove_member(&m.name).await?;
    }
    for (name, _) in store.join_tokens().await? {
        store.delete_join_token(&name).await?;
    }
    for c in store.certificates().await? {
        store.delete_certificate(&c.fingerprint).await?;
    }
    for p in store.profiles().await? {
        store.delete_profile(&p.name).await?;
    }
    store.set_config(&BTreeMap::new()).await
}

/// One number from raw SQL, to look behind the API.
async fn count(store: &Store, sql: &'static str, arg: &str) -> Result<i64, DbError> {
    Ok(dispatch!(store, pool, _d => {
        sqlx::query_scalar::<_, i64>(sql).bind(arg).fetch_one(pool).await?
    }))
}

/// Run one step; its name goes with its failure.
async fn step<F>(name: &str, f: F) -> TestResult
where
    F: Future<Output = TestResult>,
{
    f.await.map_err(|e| format!("{name}: {e}").into())
}

async fn suite(store: &Store) -> TestResult {
    step("bootstrap", bootstrap(store)).await?;
    step("config", config(store)).await?;
    step("certificates", certificates(store)).await?;
    step("members", members(store)).await?;
    step("lease", lease(store)).await?;
    step("join tokens", join_tokens(store)).await?;
    step("placement", placement(store)).await?;
    step("concurrent placement", concurrent_placement(store)).await?;
    step("locations", locations(store)).await?;
    step("sync", sync(store)).await?;
    step("images", images(store)).await?;
    step("profiles", profiles(store)).await?;
    Ok(())
}

fn profile(name: &str, key: &str, value: &str) -> ctl_api::ProfilesPost {
    ctl_api::ProfilesPost {
        name: name.into(),
        description: format!("{name} profile"),
        config: [(key.to_string(), value.to_string())].into_iter().collect(),
        devices: [(
            "root".to_string(),
            [("type", "disk"), ("path", "/"), ("pool", "default")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )]
        .into_iter()
        .collect(),
    }
}

async fn profiles(store: &Store) -> TestResult {
    assert!(store.profiles().await?.is_empty());
    let a = profile("web", "limits.cpu", "2");
    let b = profile("db", "limits.memory", "1GiB");
    store.put_profile(&a).await?;
    store.put_profile(&b).await?;
    assert_eq!(
        store.profiles().await?,
        vec![b.clone(), a.clone()],
        "by name"
    );
    // Replaced whole: a key the new one lacks is gone.
    let a2 = profile("web", "limits.processes", "100");
    store.put_profile(&a2).await?;
    assert_eq!(store.profiles().await?, vec![b.clone(), a2]);
    assert!(store.delete_profile("web").await?);
    assert!(!store.delete_profile("web").await?);
    assert_eq!(store.profiles().await?, vec![b]);
    clear(store).await?;
    Ok(())
}

async fn bootstrap(store: &Store) -> TestResult {
    let fp = "f00d".repeat(16);
    let mut data = Bootstrap {
        config: [("core.https_address", "10.0.0.1:8443"), ("cluster.x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        certificates: vec![certificate("aa", "one"), certificate("aa", "again")],
        member: new_member("boot"),
        instances: strings(&["c1", "c2"]),
        images: vec![(fp.clone(), strings(&["debian"]))],
        profiles: vec![profile("default", "limits.cpu", "1")],
    };
    // A duplicate certificate fails the whole bootstrap: nothing is left half-written.
    let failed = store.bootstrap(&data).await;
    assert!(store.profiles().await?.is_empty());
    assert!(matches!(failed, Err(DbError::Conflict(_))), "{failed:?}");
    assert!(store.members(MINUTE).await?.is_empty());
    assert!(store.config().await?.is_empty());
    assert!(store.certificates().await?.is_empty());
    assert!(store.instance_locations().await?.is_empty());
    assert!(store.image_holders(&fp).await?.is_empty());
    assert_eq!(store.resolve_image_alias("debian").await?, None);

    data.certificates[1] = certificate("bb", "two");
    store.bootstrap(&data).await?;
    let members = store.members(MINUTE).await?;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "boot");
    assert!(members[0].online);
    assert_eq!(store.config().await?, data.config);
    let fps: Vec<String> = store
        .certificates()
        .await?
        .into_iter()
        .map(|c| c.fingerprint)
        .collect();
    assert_eq!(fps, strings(&["aa", "bb"]));
    assert_eq!(
        placed(store).await?,
        pairs(&[("c1", "boot"), ("c2", "boot")])
    );
    assert_eq!(store.image_holders(&fp).await?, strings(&["boot"]));
    assert_eq!(store.resolve_image_alias("debian").await?, Some(fp.clone()));
    assert_eq!(store.profiles().await?, data.profiles);

    // A database that has a cluster refuses a second one.
    let second = Bootstrap {
        member: new_member("other"),
        ..Bootstrap::default()
    };
    let again = store.bootstrap(&second).await;
    assert!(matches!(again, Err(DbError::Conflict(_))), "{again:?}");
    assert_eq!(store.members(MINUTE).await?.len(), 1);
    clear(store).await?;
    assert_eq!(store.resolve_image_alias("debian").await?, None);
    Ok(())
}

async fn config(store: &Store) -> TestResult {
    let mut cfg = BTreeMap::new();
    cfg.insert("core.https_address".to_string(), ":8443".to_string());
    cfg.insert(
        "cluster.https_address".to_string(),
        "10.0.0.1:8443".to_string(),
    );
    store.set_config(&cfg).await?;
    assert_eq!(store.config().await?, cfg);
    cfg.remove("cluster.https_address");
    store.set_config(&cfg).await?;
    assert_eq!(store.config().await?, cfg);
    store.set_config(&BTreeMap::new()).await?;
    assert!(store.config().await?.is_empty());
    Ok(())
}

async fn certificates(store: &Store) -> TestResult {
    let mut row = certificate(&"ab".repeat(32), "laptop");
    store.insert_certificate(&row).await?;
    let dup = store.insert_certificate(&row).await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");
    let other = certificate(&"cd".repeat(32), "a-desk");
    store.insert_certificate(&other).await?;
    row.name = "z-laptop".into();
    row.restricted = false;
    row.projects = vec![];
    row.description = "renamed".into();
    store.update_certificate(&row).await?;
    assert_eq!(
        store.certificates().await?,
        vec![other.clone(), row.clone()],
        "by name"
    );
    assert!(store.delete_certificate(&row.fingerprint).await?);
    assert!(!store.delete_certificate(&row.fingerprint).await?);
    assert!(store.delete_certificate(&other.fingerprint).await?);
    assert!(store.certificates().await?.is_empty());
    Ok(())
}

async fn members(store: &Store) -> TestResult {
    for name in ["a", "c", "b"] {
        store.add_member(&new_member(name)).await?;
    }
    let names: Vec<String> = store
        .members(MINUTE)
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, strings(&["a", "b", "c"]));

    // Name, address and certificate are each unique.
    let same_name = store.add_member(&new_member("a")).await;
    assert!(
        matches!(&same_name, Err(DbError::Conflict(w)) if w.contains("\"a\"")),
        "{same_name:?}"
    );
    let mut same_address = new_member("d");
    same_address.address = new_member("b").address;
    let res = store.add_member(&same_address).await;
    assert!(
        matches!(&res, Err(DbError::Conflict(w)) if w.contains("address")),
        "{res:?}"
    );
    let mut same_cert = new_member("d");
    same_cert.fingerprint = new_member("c").fingerprint;
    let res = store.add_member(&same_cert).await;
    assert!(
        matches!(&res, Err(DbError::Conflict(w)) if w.contains("certificate")),
        "{res:?}"
    );
    assert_eq!(store.members(MINUTE).await?.len(), 3);

    let a = store.member("a", MINUTE).await?.ok_or("no member a")?;
    let want = new_member("a");
    assert_eq!(
        (&a.address, &a.fingerprint, &a.certificate),
        (&want.address, &want.fingerprint, &want.certificate)
    );
    assert_eq!(
        (&a.architecture, &a.description),
        (&want.architecture, &want.description)
    );
    assert_eq!(a.state, MemberState::Online);
    assert!(a.online);
    assert!((0..5_000).contains(&a.heartbeat_age_ms), "{a:?}");
    let system_now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    assert!(
        (a.created_ms - system_now).abs() < MINUTE,
        "{a:?} vs {system_now}"
    );
    assert_eq!(store.member("zz", MINUTE).await?, None);

    // Heartbeats age by the database's clock; a fresh one brings a member back online.
    tokio::time::sleep(PAST_OFFLINE).await;
    assert!(store.heartbeat("a").await?);
    assert!(!store.heartbeat("zz").await?);
    let now = store.members(OFFLINE_MS).await?;
    let online: Vec<bool> = now.iter().map(|m| m.online).collect();
    assert_eq!(online, [true, false, false], "{now:?}");
    assert!(now[0].heartbeat_age_ms < OFFLINE_MS);
    assert!(now[1].heartbeat_age_ms >= OFFLINE_MS, "{now:?}");

    assert!(store.set_member_state("b", MemberState::Evacuated).await?);
    let b = store.member("b", MINUTE).await?.ok_or("no member b")?;
    assert_eq!(b.state, MemberState::Evacuated);
    assert!(store.set_member_state("b", MemberState::Online).await?);
    let b = store.member("b", MINUTE).await?.ok_or("no member b")?;
    assert_eq!(b.state, MemberState::Online);
    assert!(!store.set_member_state("zz", MemberState::Online).await?);

    // A member with instances stays; once it has none it goes with its image holdings.
    store.register_instance("on-a", "a").await?;
    store.add_image("fp1", "a", &strings(&["one"])).await?;
    store.add_image("fp1", "b", &[]).await?;
    store.add_image("fp2", "a", &strings(&["two"])).await?;
    let refused = store.remove_member("a").await;
    assert!(
        matches!(&refused, Err(DbError::Conflict(w)) if w.contains("on-a")),
        "{refused:?}"
    );
    assert!(store.member("a", MINUTE).await?.is_some());
    assert!(store.remove_instance("on-a", "a").await?);
    assert!(store.remove_member("a").await?);
    assert!(!store.remove_member("a").await?);
    assert_eq!(store.image_holders("fp1").await?, strings(&["b"]));
    assert!(store.image_holders("fp2").await?.is_empty());
    assert_eq!(store.resolve_image_alias("one").await?, Some("fp1".into()));
    assert_eq!(store.resolve_image_alias("two").await?, None, "no holder");
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM cluster_images WHERE member = $1",
            "a"
        )
        .await?,
        0
    );
    clear(store).await?;
    Ok(())
}

async fn lease(store: &Store) -> TestResult {
    let fresh = store.lease().await?;
    assert_eq!((fresh.holder.as_str(), fresh.term), ("", 0));
    assert!(fresh.remaining_ms <= 0);

    assert_eq!(store.acquire_lease("n1", 300).await?, Some(1));
    let l = store.lease().await?;
    assert_eq!((l.holder.as_str(), l.term), ("n1", 1));
    assert!(l.remaining_ms > 0 && l.remaining_ms <= 300, "{l:?}");
    assert_eq!(store.acquire_lease("n1", 300).await?, Some(1), "renewed");
    assert_eq!(store.acquire_lease("n2", 300).await?, None, "held by n1");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.lease().await?.remaining_ms <= 0);
    assert_eq!(
        store.acquire_lease("n2", MINUTE).await?,
        Some(2),
        "taken over"
    );
    assert_eq!(store.acquire_lease("n1", MINUTE).await?, None, "deposed");

    // Fencing: the deposed leader's prune deletes nothing, the leader's does.
    store.add_join_token("stale", "stale-secret", 1).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let tokens = "SELECT COUNT(*) FROM cluster_tokens WHERE name = $1";
    assert_eq!(store.prune_join_tokens_as_leader("n1", 1).await?, 0);
    assert_eq!(
        store.prune_join_tokens_as_leader("n2", 1).await?,
        0,
        "old term"
    );
    assert_eq!(count(store, tokens, "stale").await?, 1);
    assert_eq!(store.prune_join_tokens_as_leader("n2", 2).await?, 1);
    assert_eq!(count(store, tokens, "stale").await?, 0);

    // Only the holder releases it; the term stays until someone takes it.
    store.release_lease("n1").await?;
    assert!(store.lease().await?.remaining_ms > 0);
    store.release_lease("n2").await?;
    let l = store.lease().await?;
    assert_eq!((l.holder.as_str(), l.term), ("n2", 2));
    assert!(l.remaining_ms <= 0, "{l:?}");
    assert_eq!(store.prune_join_tokens_as_leader("n2", 2).await?, 0);
    assert_eq!(store.acquire_lease("n1", MINUTE).await?, Some(3));

    // A holder whose own lease ran out gets a new term.
    assert_eq!(store.acquire_lease("n1", 1).await?, Some(3));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.acquire_lease("n1", MINUTE).await?, Some(4));
    store.release_lease("n1").await?;
    Ok(())
}

async fn join_tokens(store: &Store) -> TestResult {
    store.add_member(&new_member("m1")).await?;
    store.add_join_token("n2", "secret-1", MINUTE).await?;
    let dup = store.add_join_token("n2", "secret-2", MINUTE).await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");
    let member = store.add_join_token("m1", "secret-3", MINUTE).await;
    assert!(matches!(member, Err(DbError::Conflict(_))), "{member:?}");
    let listed = store.join_tokens().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "n2");
    assert!(listed[0].1 > 0 && listed[0].1 <= MINUTE, "{listed:?}");

    // The table holds the secret's SHA-256, never the secret.
    let hash: String = Sha256::digest(b"secret-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let by_hash = "SELECT COUNT(*) FROM cluster_tokens WHERE secret_sha256 = $1";
    assert_eq!(count(store, by_hash, &hash).await?, 1);
    let anywhere = "SELECT COUNT(*) FROM cluster_tokens \
                    WHERE name = $1 OR secret_sha256 = $1";
    assert_eq!(count(store, anywhere, "secret-1").await?, 0);

    // Single use.
    assert_eq!(store.redeem_join_token("wrong").await?, None);
    assert_eq!(
        store.redeem_join_token("secret-1").await?,
        Some("n2".into())
    );
    assert_eq!(store.redeem_join_token("secret-1").await?, None);
    assert!(store.join_tokens().await?.is_empty());

    // An expired token admits nobody, is not listed, and its name is free again.
    store.add_join_token("n3", "secret-4", 1).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.join_tokens().await?.is_empty());
    assert_eq!(store.redeem_join_token("secret-4").await?, None);
    store.add_join_token("n3", "secret-5", MINUTE).await?;
    assert!(store.delete_join_token("n3").await?);
    assert!(!store.delete_join_token("n3").await?);
    assert_eq!(store.redeem_join_token("secret-5").await?, None);

    // Joining spends the token and records the member together, or neither.
    store.add_join_token("n4", "secret-6", MINUTE).await?;
    let wrong_name = new_member("n5");
    assert!(!store.join_member("secret-6", &wrong_name).await?);
    assert_eq!(
        store.join_tokens().await?.len(),
        1,
        "a refused join leaves the token"
    );
    let mut clash = new_member("n4");
    clash.address = new_member("m1").address;
    let taken = store.join_member("secret-6", &clash).await;
    assert!(matches!(taken, Err(DbError::Conflict(_))), "{taken:?}");
    assert_eq!(
        store.join_tokens().await?.len(),
        1,
        "a failed join leaves the token"
    );
    assert_eq!(store.members(MINUTE).await?.len(), 1);
    assert!(store.join_member("secret-6", &new_member("n4")).await?);
    assert!(store.join_tokens().await?.is_empty());
    assert_eq!(store.members(MINUTE).await?.len(), 2);
    assert!(
        !store.join_member("secret-6", &new_member("n4")).await?,
        "spent"
    );
    store.add_join_token("n6", "secret-8", MINUTE).await?;
    assert!(
        !store.join_member("secret-8", &new_member("n7")).await?,
        "a token for another name"
    );
    clear(store).await?;
    Ok(())
}

async fn placement(store: &Store) -> TestResult {
    for name in ["a", "b", "c"] {
        store.add_member(&new_member(name)).await?;
    }
    store.set_member_state("c", MemberState::Evacuated).await?;
    assert_eq!(store.place_instance("p1", Some("a"), MINUTE).await?, "a");
    let unknown = store.place_instance("p2", Some("zz"), MINUTE).await;
    assert!(
        matches!(&unknown, Err(PlaceError::UnknownMember(m)) if m == "zz"),
        "{unknown:?}"
    );
    let evacuated = store.place_instance("p2", Some("c"), MINUTE).await;
    assert!(
        matches!(&evacuated, Err(PlaceError::Evacuated(m)) if m == "c"),
        "{evacuated:?}"
    );
    let taken = store.place_instance("p1", None, MINUTE).await;
    assert!(
        matches!(&taken, Err(PlaceError::Taken(n)) if n == "p1"),
        "{taken:?}"
    );
    let taken = store.place_instance("p1", Some("b"), MINUTE).await;
    assert!(matches!(&taken, Err(PlaceError::Taken(_))), "{taken:?}");

    // The least-loaded member that takes instances, ties by name; never the evacuated one.
    assert_eq!(store.place_instance("s1", None, MINUTE).await?, "b");
    assert_eq!(store.place_instance("s2", None, MINUTE).await?, "a");
    assert_eq!(store.place_instance("s3", None, MINUTE).await?, "b");
    assert_eq!(store.instance_location("s1").await?, Some("b".into()));

    // Offline members take nothing.
    tokio::time::sleep(PAST_OFFLINE).await;
    store.heartbeat("a").await?;
    let offline = store.place_instance("p2", Some("b"), OFFLINE_MS).await;
    assert!(
        matches!(&offline, Err(PlaceError::Offline(m)) if m == "b"),
        "{offline:?}"
    );
    assert_eq!(store.place_instance("p2", None, OFFLINE_MS).await?, "a");
    tokio::time::sleep(PAST_OFFLINE).await;
    let none = store.place_instance("p3", None, OFFLINE_MS).await;
    assert!(matches!(none, Err(PlaceError::NoMember)), "{none:?}");
    assert_eq!(store.instance_location("p3").await?, None);
    clear(store).await?;
    Ok(())
}

async fn concurrent_placement(store: &Store) -> TestResult {
    for name in ["a", "b"] {
        store.add_member(&new_member(name)).await?;
    }
    // Three rounds: the later ones run on connections the first one opened, all at once
    // (without the lock, stale counts show up in most runs).
    for round in 0..3 {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .place_instance(&format!("c{round}-{i:02}"), None, MINUTE)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let locations = placed(store).await?;
        assert_eq!(locations.len(), 20 * (round + 1));
        let on_a = locations.iter().filter(|(_, m)| m == "a").count();
        let half = 10 * (round + 1);
        assert_eq!(
            (on_a, locations.len() - on_a),
            (half, half),
            "{locations:?}"
        );
    }

    // The same name placed five times at once: one wins.
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.place_instance("same", None, MINUTE).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await? {
            Ok(_) => won += 1,
            Err(PlaceError::Taken(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(won, 1);
    clear(store).await?;
    Ok(())
}

async fn locations(store: &Store) -> TestResult {
    for name in ["a", "b"] {
        store.add_member(&new_member(name)).await?;
    }
    store.register_instance("r1", "a").await?;
    store.register_instance("r1", "a").await?;
    let other = store.register_instance("r1", "b").await;
    assert!(
        matches!(&other, Err(DbError::Conflict(w)) if w.contains("\"a\"")),
        "{other:?}"
    );
    let want = |evacuated| {
        vec![LocationRow {
            name: "r1".into(),
            member: "a".into(),
            evacuated,
        }]
    };
    assert_eq!(store.instance_locations().await?, want(false));
    store.set_instance_evacuated("r1", true).await?;
    assert_eq!(store.instance_locations().await?, want(true));
    store.set_instance_evacuated("r1", false).await?;
    assert_eq!(store.instance_locations().await?, want(false));

    store.rename_instance("r1", "r2", "a").await?;
    assert_eq!(store.instance_location("r1").await?, None);
    assert_eq!(store.instance_location("r2").await?, Some("a".into()));
    store.register_instance("r3", "b").await?;
    let taken = store.rename_instance("r2", "r3", "a").await;
    assert!(matches!(taken, Err(DbError::Conflict(_))), "{taken:?}");
    assert_eq!(placed(store).await?, pairs(&[("r2", "a"), ("r3", "b")]));
    // A rename of what the member did not record yet records the new name.
    store.rename_instance("ghost", "r4", "b").await?;
    assert_eq!(store.instance_location("r4").await?, Some("b".into()));

    assert!(!store.remove_instance("r2", "b").await?, "held by a");
    assert!(store.remove_instance("r2", "a").await?);
    assert_eq!(store.instance_location("r2").await?, None);
    clear(store).await?;
    Ok(())
}

async fn sync(store: &Store) -> TestResult {
    for name in ["a", "b"] {
        store.add_member(&new_member(name)).await?;
    }
    store.register_instance("old", "a").await?;
    store.register_instance("kept", "a").await?;
    store.register_instance("elsewhere", "b").await?;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    store.place_instance("young", Some("a"), MINUTE).await?;
    store
        .sync_member_instances("a", &strings(&["kept", "new", "elsewhere"]), 1_000)
        .await?;
    assert_eq!(
        placed(store).await?,
        pairs(&[
            ("elsewhere", "b"),
            ("kept", "a"),
            ("new", "a"),
            ("young", "a"),
        ])
    );
    // Past the grace period the reservation that never became an instance goes too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .sync_member_instances("a", &strings(&["kept", "new"]), 200)
        .await?;
    assert_eq!(
        placed(store).await?,
        pairs(&[("elsewhere", "b"), ("kept", "a"), ("new", "a")])
    );
    clear(store).await?;
    Ok(())
}

async fn images(store: &Store) -> TestResult {
    for name in ["a", "b"] {
        store.add_member(&new_member(name)).await?;
    }
    let fp1 = format!("abc1{}", "0".repeat(60));
    let fp2 = format!("abd2{}", "0".repeat(60));
    store
        .add_image(&fp1, "a", &strings(&["debian", "stable"]))
        .await?;
    store.add_image(&fp1, "b", &[]).await?;
    store.add_image(&fp1, "b", &[]).await?;
    store.add_image(&fp2, "a", &strings(&["alpine"])).await?;
    assert_eq!(store.image_holders(&fp1).await?, strings(&["a", "b"]));
    assert_eq!(store.image_holders("abc").await?, strings(&["a", "b"]));
    assert_eq!(store.image_holders("abd").await?, strings(&["a"]));
    assert!(store.image_holders("ab").await?.is_empty(), "ambiguous");
    assert!(store.image_holders("ABC").await?.is_empty());
    assert!(store.image_holders("zz").await?.is_empty());
    assert!(store.image_holders("").await?.is_empty());
    assert!(store.image_holders("%").await?.is_empty());

    assert_eq!(
        store.resolve_image_alias("debian").await?,
        Some(fp1.clone())
    );
    assert_eq!(
        store.resolve_image_alias("stable").await?,
        Some(fp1.clone())
    );
    store.add_image(&fp2, "b", &strings(&["stable"])).await?;
    assert_eq!(
        store.resolve_image_alias("stable").await?,
        Some(fp2.clone())
    );
    assert_eq!(store.image_holders(&fp2).await?, strings(&["a", "b"]));
    assert_eq!(store.resolve_image_alias("nope").await?, None);

    store.remove_image_holder(&fp1, "a").await?;
    assert_eq!(store.image_holders(&fp1).await?, strings(&["b"]));
    assert_eq!(
        store.resolve_image_alias("debian").await?,
        Some(fp1.clone())
    );
    store.remove_image_holder(&fp1, "b").await?;
    assert!(store.image_holders(&fp1).await?.is_empty());
    assert_eq!(
        store.resolve_image_alias("debian").await?,
        None,
        "no holder"
    );
    assert_eq!(
        store.resolve_image_alias("stable").await?,
        Some(fp2.clone())
    );
    clear(store).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_suite_on_sqlite() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Store::sqlite(crate::db::open(&tmp.path().join("ctld.db")).await?);
    assert!(!store.is_postgres());
    store.migrate().await?;
    suite(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_suite_on_postgres() -> TestResult {
    if !ctl_tests::require_root("store_suite_on_postgres") {
        return Ok(());
    }
    let mut pg =
        tokio::task::spawn_blocking(|| ctl_tests::pg::PgServer::start("127.0.0.1", 0)).await??;
    let store = Store::postgres_lazy(&pg.url())?;
    assert!(store.is_postgres());
    store.migrate().await?;
    store.migrate().await?;
    suite(&store).await?;

    // A database that is down fails requests fast, as unavailable; back up, they work.
    tokio::task::block_in_place(|| pg.stop());
    let started = std::time::Instant::now();
    let down = store.config().await;
    assert!(matches!(&down, Err(e) if e.is_unavailable()), "{down:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::task::block_in_place(|| pg.restart())?;
    assert!(store.config().await?.is_empty());
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn bad_database_urls_are_refused() {
    assert!(Store::postgres_lazy("not a url").is_err());
    assert!(Store::postgres_lazy("sqlite:///var/lib/ctl/ctld.db").is_err());
    assert!(Store::postgres_lazy("postgres://ctl:pw@127.0.0.1:5432/ctl").is_ok());
}

#[test]
fn only_connection_failures_are_unavailable() {
    assert!(DbError::Sqlx(sqlx::Error::PoolTimedOut).is_unavailable());
    assert!(
        DbError::Sqlx(sqlx::Error::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        ))
        .is_unavailable()
    );
    assert!(!DbError::Conflict("x".into()).is_unavailable());
    assert!(!DbError::Sqlx(sqlx::Error::RowNotFound).is_unavailable());
}
