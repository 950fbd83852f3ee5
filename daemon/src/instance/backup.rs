//! The self-describing file in every container directory, `backup.yaml` (as Incus keeps one
//! in each instance's storage): the instance's record and its image's, kept current on
//! every change of the record. It is what lets ctld tell a container it lost the record of
//! from a half-made directory, refuse to start on a database that lost every instance, and
//! rebuild the records (`ctld recover`).
//!
//! Written atomically: a temporary file in the same directory, synced, renamed over the old
//! one, the directory synced. A crash leaves the old file or the new one, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::{self, instances::Config, instances::Devices};

/// The file's name in a container directory.
pub const FILE: &str = "backup.yaml";
/// The format written; a reader refuses newer ones.
pub const VERSION: u32 = 1;

/// Everything needed to rebuild an instance's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub version: u32,
    /// Set just before the record is deleted: a directory whose backup says so and that has
    /// no record is a delete that a crash interrupted, finished at the next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    pub instance: Instance,
    /// The image the container's lower layer comes from, as it was recorded.
    pub image: Option<Image>,
}

/// The instance's record, without what only a running daemon knows (its init).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub architecture: String,
    #[serde(default)]
    pub ephemeral: bool,
    pub image_fingerprint: String,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub devices: Devices,
    #[serde(default)]
    pub profiles: Vec<String>,
    pub created_at: String,
    #[serde(default)]
    pub last_used_at: String,
}

/// The image's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub fingerprint: String,
    #[serde(default)]
    pub filename: String,
    pub size: i64,
    pub architecture: String,
    pub created_at: String,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub cached: bool,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Errors reading a backup file.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
}

impl Backup {
    /// The backup of `row`, with its image's record when there is one.
    pub fn of(row: &db::InstanceRow, image: Option<&db::images::ImageRow>) -> Backup {
        Backup {
            version: VERSION,
            deleting: false,
            instance: Instance {
                name: row.name.clone(),
                description: row.description.clone(),
                architecture: row.architecture.clone(),
                ephemeral: row.ephemeral,
                image_fingerprint: row.image_fingerprint.clone(),
                config: row.config.clone(),
                devices: row.devices.clone(),
                profiles: row.profiles.clone(),
                created_at: row.created_at.clone(),
                last_used_at: row.last_used_at.clone(),
            },
            image: image.map(|i| Image {
                fingerprint: i.fingerprint.clone(),
                filename: i.filename.clone(),
                size: i.size,
                architecture: i.architecture.clone(),
                created_at: i.created_at.clone(),
                public: i.public,
                cached: i.cached,
                properties: i.properties.clone(),
            }),
        }
    }
}

/// Whether `dir` (a container directory) has a backup file.
pub fn exists(dir: &Path) -> bool {
    dir.join(FILE).is_file()
}

/// Whether `dir` holds a container (a backup file not marked as being deleted; one that
/// cannot be read counts, so it is never taken for garbage).
pub fn holds_container(dir: &Path) -> bool {
    match read(dir) {
        Ok(b) => !b.deleting,
        Err(_) => exists(dir),
    }
}

/// Write `backup` into `dir`, atomically and durably (see the module docs). Nothing is
/// written when the file already says exactly this (every start refreshes every
/// container's file).
pub fn write(dir: &Path, backup: &Backup) -> io::Result<()> {
    write_with(dir, backup, true)
}

/// [`write`], with the syncs left out when `sync` is false: still atomic against a crash of
/// ctld (the rename), not against a power cut. For the volatile keys a start records.
pub fn write_with(dir: &Path, backup: &Backup, sync: bool) -> io::Result<()> {
    let text = serde_yaml_ng::to_string(backup).map_err(io::Error::other)?;
    if fs::read(dir.join(FILE)).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{FILE}.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, dir.join(FILE))?;
    if sync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Read `dir`'s backup file.
pub fn read(dir: &Path) -> Result<Backup, BackupError> {
    let path = dir.join(FILE);
    let text = fs::read_to_string(&path).map_err(|source| BackupError::Io {
        path: path.clone(),
        source,
    })?;
    let backup: Backup = serde_yaml_ng::from_str(&text).map_err(|e| BackupError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if backup.version > VERSION {
        return Err(BackupError::Invalid {
            path,
            message: format!(
                "format version {} is newer than this ctld's ({VERSION})",
                backup.version
            ),
        });
    }
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if dir_name.as_deref() != Some(backup.instance.name.as_str()) {
        return Err(BackupError::Invalid {
            path,
            message: format!(
                "names instance {:?}, not its directory's name",
                backup.instance.name
            ),
        });
    }
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Backup {
        let mut config = Config::new();
        config.insert("limits.memory".into(), "64MiB".into());
        config.insert("volatile.idmap.base".into(), "1065536".into());
        Backup {
            version: VERSION,
            deleting: false,
            instance: Instance {
                name: name.into(),
                description: "web".into(),
                architecture: "x86_64".into(),
                ephemeral: false,
                image_fingerprint: "ab".repeat(32),
                config,
                devices: Devices::new(),
                profiles: vec!["default".into()],
                created_at: "2026-12-05T00:00:00Z".into(),
                last_used_at: String::new(),
            },
            image: Some(Image {
                fingerprint: "ab".repeat(32),
                filename: String::new(),
                size: 42,
                architecture: "x86_64".into(),
                created_at: "2026-12-05T00:00:00Z".into(),
                public: false,
                cached: true,
                properties: BTreeMap::from([("os".into(), "busybox".into())]),
            }),
        }
    }

    #[test]
    fn a_backup_round_trips_and_replaces_the_old_one_whole()
    -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("c1");
        fs::create_dir(&dir)?;
        assert!(!exists(&dir));
        let mut b = sample("c1");
        write(&dir, &b)?;
        assert!(exists(&dir));
        assert_eq!(read(&dir)?, b);
        b.instance.description = "changed".into();
        write(&dir, &b)?;
        assert_eq!(read(&dir)?.instance.description, "changed");
        let names: Vec<_> = fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE.to_string()], "no temporary file left");
        Ok(())
    }

    #[test]
    fn a_backup_that_names_another_instance_or_a_newer_format_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("c2");
        fs::create_dir(&dir)?;
        write(&dir, &sample("other"))?;
        let e = read(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not its directory's name"), "{e}");
        let mut newer = sample("c2");
        newer.version = VERSION + 1;
        write(&dir, &newer)?;
        let e = read(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("newer"), "{e}");
        fs::write(dir.join(FILE), "instance: [")?;
        assert!(matches!(read(&dir), Err(BackupError::Invalid { .. })));
        Ok(())
    }
}
