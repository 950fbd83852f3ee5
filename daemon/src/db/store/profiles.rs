//! Profiles as a cluster shares them. The member that changes a profile applies the
//! change to its own instances, then records the profile here; every member brings its
//! own profiles in line with these on its heartbeat (`cluster::Cluster::sync_profiles`).

use ctl_api::ProfilesPost;

use super::{Store, dispatch};
use crate::db::DbError;

fn json_column<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: &str,
) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|source| DbError::Json { column, source })
}

/// Create or replace a profile: name, description, config JSON, devices JSON.
pub(super) const UPSERT_PROFILE: &str = "INSERT INTO cluster_profiles (name, description, config, devices) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
     description = excluded.description, config = excluded.config, \
     devices = excluded.devices";

/// A profile's config and devices as their JSON columns.
pub(super) fn profile_columns(profile: &ProfilesPost) -> (String, String) {
    (
        serde_json::to_string(&profile.config).unwrap_or_else(|_| "{}".into()),
        serde_json::to_string(&profile.devices).unwrap_or_else(|_| "{}".into()),
    )
}

impl Store {
    /// Every shared profile, by name.
    pub async fn profiles(&self) -> Result<Vec<ProfilesPost>, DbError> {
        dispatch!(self, pool, _d => {
            let rows: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT name, description, config, devices FROM cluster_profiles",
            )
            .fetch_all(pool)
            .await?;
            let mut out = rows
                .into_iter()
                .map(|(name, description, config, devices)| {
                    Ok(ProfilesPost {
                        name,
                        description,
                        config: json_column("config", &config)?,
                        devices: json_column("devices", &devices)?,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    /// Record `profile` as it now is (created or replaced).
    pub async fn put_profile(&self, profile: &ProfilesPost) -> Result<(), DbError> {
        let (config, devices) = profile_columns(profile);
        dispatch!(self, pool, _d => {
            sqlx::query(UPSERT_PROFILE)
            .bind(&profile.name)
            .bind(&profile.description)
            .bind(&config)
            .bind(&devices)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Forget profile `name`; whether it was there.
    pub async fn delete_profile(&self, name: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, _d => {
            let res = sqlx::query("DELETE FROM cluster_profiles WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }
}
