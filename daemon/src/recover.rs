//! Rebuilding lost records from the container directories (`ctld recover`), and the start-up
//! check that refuses a database which lost every instance while containers remain on disk.
//!
//! Each container directory carries a `backup.yaml` ([`crate::instance::backup`]). `recover`
//! inserts a record for every directory whose instance the database does not know, and the
//! image record it needs when the image's files are still in the store. It never changes or
//! removes a directory, and never touches a record that exists.

use std::path::{Path, PathBuf};

use crate::db::{self, DbError, Pool};
use crate::instance::backup::{self, Backup};
use crate::paths::Paths;

/// What [`recover`] did with one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A record was made (`dropped`: profiles it named that no longer exist).
    Recovered {
        name: String,
        image_recovered: bool,
        dropped_profiles: Vec<String>,
    },
    /// Left as it was, and why.
    Skipped { dir: PathBuf, reason: String },
    /// A storage pool's record came back from `storage.json` (and the pool was mounted).
    PoolRecovered { name: String },
    /// A custom volume's record came back from `storage.json`.
    VolumeRecovered { pool: String, name: String },
}

/// Container directories under `containers` that have a backup file (not marked as being
/// deleted).
pub fn directories_with_backups(containers: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(containers)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| backup::holds_container(p))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Whether the database lost its instances: it records none while `containers` holds
/// directories with backup files, or links to directories in pools that are not mounted
/// (the pools' records went with the rest). Returns how many such entries exist.
pub async fn lost_instances(pool: &Pool, containers: &Path) -> Result<Option<usize>, DbError> {
    if !db::instances::names(pool).await?.is_empty() {
        return Ok(None);
    }
    // Links into pools count when the pools' records are gone too (`storage.json` names a
    // pool the database lacks): a link a crash left dangling alone does not stop a start.
    let mut pools_lost = false;
    if let Some(dir) = containers.parent()
        && let Ok(Some(record)) = crate::storage::record::read(dir)
    {
        for p in &record.pools {
            pools_lost |= db::storage::pool(pool, &p.name).await?.is_none();
        }
    }
    let dangling = std::fs::read_dir(containers)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()) && !e.path().exists())
                .count()
        })
        .unwrap_or(0)
        * usize::from(pools_lost);
    let n = directories_with_backups(containers).len() + dangling;
    Ok((n > 0).then_some(n))
}

/// Bring back the storage records `storage.json` has and the database lacks (pools first,
/// then their custom volumes), and mount the pools ctld mounts, so the instances on them are
/// reachable again.
pub async fn recover_storage(pool: &Pool, paths: &Paths) -> Result<Vec<Outcome>, DbError> {
    let mut out = Vec::new();
    let record = match crate::storage::record::read(&paths.dir) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(out),
        Err(e) => {
            out.push(Outcome::Skipped {
                dir: paths.dir.join(crate::storage::record::FILE),
                reason: e.to_string(),
            });
            return Ok(out);
        }
    };
    for p in &record.pools {
        if db::storage::pool(pool, &p.name).await?.is_none() {
            db::storage::insert_pool(pool, &p.row()).await?;
            out.push(Outcome::PoolRecovered {
                name: p.name.clone(),
            });
        }
    }
    for v in &record.volumes {
        if db::storage::pool(pool, &v.pool).await?.is_some()
            && db::storage::volume(pool, &v.pool, &v.name).await?.is_none()
        {
            db::storage::insert_volume(pool, &v.row()).await?;
            for s in v.snapshot_rows() {
                db::storage::insert_volume_snapshot(pool, &v.pool, &v.name, &s).await?;
            }
            out.push(Outcome::VolumeRecovered {
                pool: v.pool.clone(),
                name: v.name.clone(),
            });
        }
    }
    let storage = crate::storage::Storage::new(pool.clone(), std::sync::Arc::new(paths.clone()));
    if let Err(e) = storage.mount_all().await {
        out.push(Outcome::Skipped {
            dir: paths.dir.join("storage-pools"),
            reason: e.to_string(),
        });
    }
    storage.save_record().await;
    Ok(out)
}

/// Insert the records of every container directory the database does not know.
pub async fn recover(pool: &Pool, paths: &Paths) -> Result<Vec<Outcome>, DbError> {
    // Pools first: instances on them are reachable only once they are mounted.
    let mut out = recover_storage(pool, paths).await?;
    let known = db::instances::names(pool).await?;
    let profiles: Vec<String> = db::profiles::list(pool)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    for dir in directories_with_backups(&paths.containers()) {
        let b = match backup::read(&dir) {
            Ok(b) => b,
            Err(e) => {
                out.push(Outcome::Skipped {
                    dir,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if known.contains(&b.instance.name) || b.deleting {
            continue;
        }
        out.push(recover_one(pool, paths, &dir, &b, &profiles).await?);
    }
    Ok(out)
}

async fn recover_one(
    pool: &Pool,
    paths: &Paths,
    dir: &Path,
    b: &Backup,
    profiles: &[String],
) -> Result<Outcome, DbError> {
    let skip = |reason: String| Outcome::Skipped {
        dir: dir.to_path_buf(),
        reason,
    };
    let i = &b.instance;
    if crate::instance::name::validate(&i.name).is_err() {
        return Ok(skip(format!("{:?} is not a valid instance name", i.name)));
    }
    let fp = &i.image_fingerprint;
    let image_known = db::images::find_prefix(pool, fp)
        .await?
        .iter()
        .any(|r| &r.fingerprint == fp);
    let mut image_recovered = false;
    if !image_known {
        let rootfs = paths.image(fp).join("rootfs");
        let (Some(img), true) = (&b.image, rootfs.is_dir()) else {
            return Ok(skip(format!(
                "its image {fp} is neither recorded nor complete in the image store"
            )));
        };
        if &img.fingerprint != fp {
            return Ok(skip("its backup names two different images".into()));
        }
        db::images::insert(
            pool,
            &db::images::NewImage {
                fingerprint: fp,
                filename: &img.filename,
                size: img.size,
                architecture: &img.architecture,
                created_at: &img.created_at,
                properties: &img.properties,
                public: img.public,
                cached: img.cached,
            },
        )
        .await?;
        image_recovered = true;
    }
    let (kept, dropped): (Vec<String>, Vec<String>) = i
        .profiles
        .iter()
        .cloned()
        .partition(|p| profiles.contains(p));
    // The backup file may predate the last stop (it is written when the record changes,
    // not at each start and stop): a recovered instance waits to be started, never
    // autostarts on a power state that may be stale.
    let mut config = i.config.clone();
    config.remove(crate::instance::config::LAST_POWER);
    db::instances::insert(
        pool,
        &db::NewInstance {
            name: &i.name,
            description: &i.description,
            architecture: &i.architecture,
            ephemeral: i.ephemeral,
            image_fingerprint: fp,
            config: &config,
            devices: &i.devices,
            profiles: &kept,
            created_at: &i.created_at,
        },
    )
    .await?;
    Ok(Outcome::Recovered {
        name: i.name.clone(),
        image_recovered,
        dropped_profiles: dropped,
    })
}
