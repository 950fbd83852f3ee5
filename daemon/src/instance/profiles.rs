//! Profiles: named sets of config keys and devices that instances apply, in order. An
//! instance's expanded config and devices are its profiles' in order (later ones win), then
//! its own (which win); every start, exec and update uses that expansion. A profile change
//! is checked against every instance that uses it and applied to each of them as its own
//! update would be (live where a key allows), or not at all.

use std::collections::BTreeMap;

use ctl_api::{Profile, ProfilePut, ProfilesPost};

use super::update::{Applied, UpdatePlan};
use super::{InstanceError, Instances, config};
use crate::db::{self, DbError, InstanceRow, ProfileRow};
use crate::network::{self, NetworkError};

/// Config as stored.
type Config = BTreeMap<String, String>;

/// The profile every instance applies unless told otherwise; it can be neither deleted nor
/// renamed.
pub const DEFAULT: &str = "default";

/// The config of an instance that applies `applied` (names of `profiles`, in order) and
/// has `own` keys: each profile's keys over the previous ones, the instance's over all.
pub fn expand_config(profiles: &[ProfileRow], applied: &[String], own: &Config) -> Config {
    let mut out = Config::new();
    for p in applied
        .iter()
        .filter_map(|name| profiles.iter().find(|p| &p.name == name))
    {
        out.extend(p.config.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// `row` with its config expanded (what a start, a stop or an exec reads).
pub(super) fn expanded(row: &InstanceRow, profiles: &[ProfileRow]) -> InstanceRow {
    InstanceRow {
        config: expand_config(profiles, &row.profiles, &row.config),
        ..row.clone()
    }
}

/// `own` with its `volatile.*` keys replaced by those of `expanded` (the keys a start
/// wrote into the expanded config; profiles never hold any).
pub(super) fn with_volatile_of(own: &Config, expanded: &Config) -> Config {
    own.iter()
        .filter(|(k, _)| !k.starts_with("volatile."))
        .chain(expanded.iter().filter(|(k, _)| k.starts_with("volatile.")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A profile list an instance may apply: every name exists, none twice.
pub(super) fn check_list(all: &[ProfileRow], applied: &[String]) -> Result<(), InstanceError> {
    for (i, p) in applied.iter().enumerate() {
        if !all.iter().any(|a| &a.name == p) {
            return Err(InstanceError::Invalid(format!("profile \"{p}\" not found")));
        }
        if applied[..i].contains(p) {
            return Err(InstanceError::Invalid(format!(
                "profile \"{p}\" is listed twice"
            )));
        }
    }
    Ok(())
}

/// Profile name rules (Incus's API names): 1 to 64 characters, no white space, none of
/// `/ $ ? & + " ' ` *`, starting and ending with an ASCII letter or digit (so never `.` or
/// `..`).
pub fn validate_name(name: &str) -> Result<(), InstanceError> {
    let bad = |why: &str| {
        Err(InstanceError::Invalid(format!(
            "invalid profile name \"{name}\": {why}"
        )))
    };
    if name.is_empty() {
        return Err(InstanceError::Invalid("no profile name provided".into()));
    }
    if name.len() > 64 {
        return bad("at most 64 characters");
    }
    if name.chars().any(char::is_whitespace) {
        return bad("no white space");
    }
    if let Some(c) = name.chars().find(|c| "/$?&+\"'`*".contains(*c)) {
        return bad(&format!("\"{c}\" is not allowed"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return bad("it must start and end with a letter or digit");
    }
    Ok(())
}

/// The config keys a profile may hold: any an instance may set, except the daemon's own
/// (`volatile.*`, `image.*`), each value valid.
pub(super) fn check_config(config: &Config, host: &config::Host) -> Result<(), InstanceError> {
    if let Some(k) = config
        .keys()
        .find(|k| k.starts_with("volatile.") || k.starts_with("image."))
    {
        return Err(InstanceError::Invalid(format!(
            "\"{k}\" cannot be set in a profile"
        )));
    }
    config::validate(config, &Config::new(), host)?;
    Ok(())
}

/// The value of a PUT (`patch == false`: replace) or PATCH (merge; an empty value
/// removes) of one map of a profile.
fn merged<V: Clone>(
    current: &BTreeMap<String, V>,
    given: Option<BTreeMap<String, V>>,
    patch: bool,
    is_empty: impl Fn(&V) -> bool,
) -> BTreeMap<String, V> {
    let mut out = match (given, patch) {
        (Some(g), false) => g,
        (Some(g), true) => {
            let mut m = current.clone();
            m.extend(g);
            m
        }
        (None, _) => current.clone(),
    };
    out.retain(|_, v| !is_empty(v));
    out
}

impl Instances {
    /// Every profile.
    pub async fn profiles(&self) -> Result<Vec<Profile>, InstanceError> {
        let rows = db::profiles::list(&self.db).await?;
        let instances = db::instances::list(&self.db).await?;
        Ok(rows.into_iter().map(|p| to_api(p, &instances)).collect())
    }

    /// One profile.
    pub async fn profile(&self, name: &str) -> Result<Profile, InstanceError> {
        let row = self.profile_row(name).await?;
        let instances = db::instances::list(&self.db).await?;
        Ok(to_api(row, &instances))
    }

    async fn profile_row(&self, name: &str) -> Result<ProfileRow, InstanceError> {
        db::profiles::get(&self.db, name)
            .await?
            .ok_or_else(|| InstanceError::ProfileNotFound(name.to_string()))
    }

    /// Check a profile's devices: known types and keys, networks and parent bridges that
    /// exist, proxies that parse, no static address (it would be every instance's).
    async fn check_profile_devices(
        &self,
        name: &str,
        devices: &network::Devices,
    ) -> Result<(), InstanceError> {
        let nics = network::config::devices(devices).map_err(NetworkError::from)?;
        if let Some(n) = nics.iter().find(|n| n.ipv4.is_some()) {
            return Err(InstanceError::Invalid(format!(
                "device \"{}\": a static ipv4.address belongs on an instance, not a profile",
                n.device
            )));
        }
        network::config::proxy_devices(devices).map_err(NetworkError::from)?;
        // Networks and parent bridges must exist (checked as for an instance of that name).
        self.networks
            .resolve_nics(&format!("profile:{name}"), devices)
            .await?;
        Ok(())
    }

    /// Create a profile (`POST /1.0/profiles`): name, config and devices checked first.
    pub async fn create_profile(&self, req: ProfilesPost) -> Result<(), InstanceError> {
        validate_name(&req.name)?;
        let mut config = req.config;
        config.retain(|_, v| !v.is_empty());
        check_config(&config, &self.host)?;
        self.check_profile_devices(&req.name, &req.devices).await?;
        let _profiles = self.profiles_lock.lock().await;
        let row = ProfileRow {
            name: req.name,
            description: req.description,
            config,
            devices: req.devices,
        };
        match db::profiles::insert(&self.db, &row).await {
            Err(DbError::Conflict(_)) => return Err(InstanceError::ProfileExists(row.name)),
            r => r?,
        }
        tracing::info!(profile = %row.name, "profile created");
        self.events
            .profile("profile-created", &row.name, BTreeMap::new());
        Ok(())
    }

    /// Apply a PUT (`patch == false`: replace) or PATCH (merge) to a profile. The new
    /// expansion of every instance using it is checked first (an error names the
    /// instance); then each gets it as its own update would (running ones live where a key
    /// allows, the rest at their next start). If one fails, those already changed are put
    /// back and the profile stays as it was.
    pub async fn update_profile(
        &self,
        name: &str,
        put: ProfilePut,
        patch: bool,
    ) -> Result<(), InstanceError> {
        let _profiles = self.profiles_lock.lock().await;
        let current = self.profile_row(name).await?;
        let config = merged(&current.config, put.config, patch, String::is_empty);
        check_config(&config, &self.host)?;
        let devices = merged(&current.devices, put.devices, patch, BTreeMap::is_empty);
        self.check_profile_devices(name, &devices).await?;
        let row = ProfileRow {
            name: name.to_string(),
            description: put.description.unwrap_or(current.description.clone()),
            config,
            devices,
        };
        let before = db::profiles::list(&self.db).await?;
        let after: Vec<ProfileRow> = before
            .iter()
            .map(|p| {
                if p.name == name {
                    row.clone()
                } else {
                    p.clone()
                }
            })
            .collect();
        // Every instance using it, locked in name order (as any other multi-lock taker).
        let users = self.profile_users(name).await?;
        let locks: Vec<_> = users.iter().map(|u| self.lock_for(u)).collect();
        let mut _guards = Vec::with_capacity(locks.len());
        for l in &locks {
            _guards.push(l.lock().await);
        }
        let mut plans = Vec::with_capacity(users.len());
        for user in &users {
            let r = self.row(user).await?;
            let (own, devices, list) = (r.config.clone(), r.devices.clone(), r.profiles.clone());
            let plan = self
                .plan_update(r, before.clone(), after.clone(), own, devices, list)
                .await
                .map_err(|e| for_instance(user, e))?;
            plans.push(plan);
        }
        let mut done: Vec<(&UpdatePlan, Applied)> = Vec::with_capacity(plans.len());
        for plan in &plans {
            match self.apply_update(plan).await {
                Ok(applied) => done.push((plan, applied)),
                Err(e) => {
                    self.undo_all(done).await;
                    return Err(for_instance(&plan.name, e));
                }
            }
        }
        let configs: Vec<(String, Config)> = plans
            .iter()
            .filter(|p| p.config != p.row.config)
            .map(|p| (p.name.clone(), p.config.clone()))
            .collect();
        if let Err(e) = db::profiles::update_with_instances(&self.db, &row, &configs).await {
            self.undo_all(done).await;
            return Err(e.into());
        }
        for plan in &plans {
            self.save_backup_or_warn(&plan.name).await;
            self.events
                .instance("instance-updated", &plan.name, BTreeMap::new());
        }
        tracing::info!(profile = %name, instances = users.len(), "profile updated");
        self.events
            .profile("profile-updated", name, BTreeMap::new());
        Ok(())
    }

    async fn undo_all(&self, done: Vec<(&UpdatePlan, Applied)>) {
        for (plan, applied) in done.into_iter().rev() {
            self.undo_update(plan, applied).await;
        }
    }

    /// Names of the instances that apply profile `name`, sorted.
    async fn profile_users(&self, name: &str) -> Result<Vec<String>, InstanceError> {
        let mut users: Vec<String> = db::instances::list(&self.db)
            .await?
            .into_iter()
            .filter(|i| i.profiles.iter().any(|p| p == name))
            .map(|i| i.name)
            .collect();
        users.sort();
        Ok(users)
    }

    /// Rename a profile (`POST /1.0/profiles/{name}`); the profile lists of the instances
    /// (and snapshots) that name it follow in the same transaction. `default` keeps its
    /// name.
    pub async fn rename_profile(&self, name: &str, to: &str) -> Result<(), InstanceError> {
        if name == DEFAULT {
            return Err(InstanceError::Forbidden(
                "the \"default\" profile cannot be renamed".into(),
            ));
        }
        validate_name(to)?;
        let _profiles = self.profiles_lock.lock().await;
        self.profile_row(name).await?;
        if db::profiles::get(&self.db, to).await?.is_some() {
            return Err(InstanceError::ProfileExists(to.to_string()));
        }
        let users = self.profile_users(name).await?;
        let locks: Vec<_> = users.iter().map(|u| self.lock_for(u)).collect();
        let mut _guards = Vec::with_capacity(locks.len());
        for l in &locks {
            _guards.push(l.lock().await);
        }
        match db::profiles::rename(&self.db, name, to).await {
            Err(DbError::Conflict(_)) => return Err(InstanceError::ProfileExists(to.into())),
            Ok(false) => return Err(InstanceError::ProfileNotFound(name.into())),
            r => r?,
        };
        for user in &users {
            self.save_backup_or_warn(user).await;
        }
        tracing::info!(profile = %name, to = %to, instances = users.len(), "profile renamed");
        let context = BTreeMap::from([("old_name".to_string(), serde_json::Value::from(name))]);
        self.events.profile("profile-renamed", to, context);
        Ok(())
    }

    /// Delete a profile no instance uses (`default` stays).
    pub async fn delete_profile(&self, name: &str) -> Result<(), InstanceError> {
        if name == DEFAULT {
            return Err(InstanceError::Forbidden(
                "the \"default\" profile cannot be deleted".into(),
            ));
        }
        let _profiles = self.profiles_lock.lock().await;
        match db::profiles::delete_unused(&self.db, name).await? {
            Ok(true) => {}
            Ok(false) => return Err(InstanceError::ProfileNotFound(name.into())),
            Err(users) => {
                return Err(InstanceError::Invalid(format!(
                    "profile \"{name}\" is currently in use by {}",
                    users
                        .iter()
                        .map(|u| format!("/1.0/instances/{u}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        tracing::info!(profile = %name, "profile deleted");
        self.events
            .profile("profile-deleted", name, BTreeMap::new());
        Ok(())
    }
}

/// An error about instance `name` met while changing a profile it uses.
fn for_instance(name: &str, e: InstanceError) -> InstanceError {
    InstanceError::ForInstance {
        instance: name.to_string(),
        source: Box::new(e),
    }
}

fn to_api(p: ProfileRow, instances: &[InstanceRow]) -> Profile {
    let used_by = instances
        .iter()
        .filter(|i| i.profiles.contains(&p.name))
        .map(|i| format!("/1.0/instances/{}", i.name))
        .collect();
    Profile {
        name: p.name,
        description: p.description,
        config: p.config,
        devices: p.devices,
        used_by,
        project: "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Config {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn profile(name: &str, pairs: &[(&str, &str)]) -> ProfileRow {
        ProfileRow {
            name: name.into(),
            description: String::new(),
            config: map(pairs),
            devices: Default::default(),
        }
    }

    #[test]
    fn later_profiles_win_and_the_instance_wins_over_all() {
        let all = [
            profile("default", &[("limits.memory", "1GiB"), ("user.a", "d")]),
            profile("p1", &[("limits.memory", "64MiB"), ("limits.cpu", "1")]),
            profile("p2", &[("limits.cpu", "2"), ("user.b", "p2")]),
        ];
        let applied = ["default", "p1", "p2"].map(String::from);
        let own = map(&[("user.b", "own")]);
        assert_eq!(
            expand_config(&all, &applied, &own),
            map(&[
                ("limits.memory", "64MiB"),
                ("limits.cpu", "2"),
                ("user.a", "d"),
                ("user.b", "own"),
            ])
        );
        // The order of the list decides, not the order of the profiles.
        let reversed = ["p2", "p1"].map(String::from);
        assert_eq!(
            expand_config(&all, &reversed, &Config::new()).get("limits.cpu"),
            Some(&"1".to_string())
        );
        // Profiles not applied add nothing.
        assert_eq!(expand_config(&all, &[], &own), own);
    }

    #[test]
    fn a_start_records_only_volatile_keys_into_the_instance() {
        let own = map(&[("user.x", "1"), ("volatile.eth0.hwaddr", "old")]);
        let expanded = map(&[
            ("user.x", "1"),
            ("limits.memory", "64MiB"),
            ("volatile.eth0.hwaddr", "new"),
            ("volatile.idmap.current", "[]"),
        ]);
        assert_eq!(
            with_volatile_of(&own, &expanded),
            map(&[
                ("user.x", "1"),
                ("volatile.eth0.hwaddr", "new"),
                ("volatile.idmap.current", "[]"),
            ])
        );
    }

    #[test]
    fn profile_names_follow_incus_rules() {
        for good in ["p1", "web-1", "a", "A.b_c", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "-a",
            "a-",
            "a b",
            "a$",
            "a?b",
            "a*",
            &"x".repeat(65),
            "é",
        ] {
            assert!(
                matches!(validate_name(bad), Err(InstanceError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn profile_config_takes_instance_keys_but_not_the_daemons() {
        let host = config::Host {
            memory: 8 << 30,
            cpus: vec![0, 1],
        };
        assert!(
            check_config(
                &map(&[
                    ("limits.memory", "64MiB"),
                    ("security.nesting", "true"),
                    ("boot.autostart", "true"),
                    ("environment.FOO", "bar"),
                    ("user.note", "x"),
                    ("raw.init", "/bin/sh"),
                ]),
                &host
            )
            .is_ok()
        );
        for bad in [
            map(&[("volatile.eth0.hwaddr", "00:16:3e:00:00:01")]),
            map(&[("image.os", "busybox")]),
            map(&[("limits.memory", "lots")]),
            map(&[("no.such.key", "1")]),
            map(&[("security.privileged", "maybe")]),
        ] {
            assert!(check_config(&bad, &host).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_instance_profile_list_must_name_existing_profiles_once() {
        let all = [profile("default", &[]), profile("p1", &[])];
        assert!(check_list(&all, &["default".into(), "p1".into()]).is_ok());
        assert!(check_list(&all, &[]).is_ok());
        assert!(check_list(&all, &["nope".into()]).is_err());
        assert!(check_list(&all, &["p1".into(), "p1".into()]).is_err());
    }

    #[test]
    fn a_patch_merges_and_an_empty_value_removes() {
        let current = map(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            merged(
                &current,
                Some(map(&[("b", ""), ("c", "3")])),
                true,
                String::is_empty
            ),
            map(&[("a", "1"), ("c", "3")])
        );
        assert_eq!(
            merged(&current, Some(map(&[("c", "3")])), false, String::is_empty),
            map(&[("c", "3")])
        );
        assert_eq!(merged(&current, None, false, String::is_empty), current);
    }
}
