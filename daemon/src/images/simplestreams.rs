//! The simplestreams format, both ways, as pure functions: reading an image server's
//! `streams/v1/index.json` and product catalog and choosing what to download for an alias
//! on this host; and describing ctld's own public images as such a tree (the server side).
//!
//! A catalog lists products (`debian:bookworm:amd64:default`) with comma-separated aliases
//! and dated versions; a version's items are files with their sha256. A container image is
//! either one unified tarball (`incus_combined.tar.gz`), whose sha256 is the fingerprint,
//! or a metadata tarball (`incus.tar.xz`) plus a rootfs (`squashfs` or `root.tar.xz`),
//! whose fingerprint (the sha256 of both files, in that order) the metadata item carries as
//! `combined_squashfs_sha256` / `combined_rootxz_sha256`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `streams/v1/index.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub index: BTreeMap<String, IndexEntry>,
}

/// One catalog listed by the index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    #[serde(default)]
    pub datatype: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub products: Vec<String>,
}

/// A product catalog (`streams/v1/images.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(default)]
    pub content_id: String,
    #[serde(default)]
    pub datatype: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub products: BTreeMap<String, Product>,
}

/// One product: an OS release for one architecture and variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Comma-separated aliases.
    #[serde(default)]
    pub aliases: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub release: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release_title: String,
    #[serde(default)]
    pub variant: String,
    #[serde(default)]
    pub versions: BTreeMap<String, Version>,
}

/// One dated build of a product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Version {
    #[serde(default)]
    pub items: BTreeMap<String, Item>,
}

/// One file of a version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    #[serde(default)]
    pub ftype: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size: u64,
    /// Relative to the server's base URL.
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_squashfs_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_rootxz_sha256: Option<String>,
}

/// A file to download: where, how big, and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// `metadata`, `rootfs` or `image`, for progress and messages.
    pub role: &'static str,
}

/// What to download for an alias on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub product: String,
    pub version: String,
    /// The image's fingerprint: the sha256 of the files, in order.
    pub fingerprint: String,
    /// One unified tarball, or metadata then rootfs.
    pub files: Vec<Download>,
    /// `os`, `release`, `variant`, `architecture`, `description`, `serial`.
    pub properties: BTreeMap<String, String>,
}

/// Why nothing could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("image \"{name}\" not found on {server} (known: {})", known.join(", "))]
    NotFound {
        name: String,
        server: String,
        known: Vec<String>,
    },
    #[error("image \"{0}\" has no container image this daemon can use")]
    NoUsableVersion(String),
    #[error("bad simplestreams data: {0}")]
    Bad(String),
}

/// Item file types a container image may use.
const COMBINED: &[&str] = &["incus_combined.tar.gz", "lxd_combined.tar.gz"];
const METADATA: &[&str] = &["incus.tar.xz", "lxd.tar.xz"];

/// The simplestreams name of the host architecture (Debian's names).
pub fn stream_arch(host_arch: &str) -> &str {
    match host_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "armhf",
        "i686" => "i386",
        "ppc64le" => "ppc64el",
        other => other,
    }
}

/// The path of the image catalog the index lists (`datatype: image-downloads`).
pub fn catalog_path(index: &Index) -> Result<String, SelectError> {
    index
        .index
        .values()
        .find(|e| e.datatype == "image-downloads" && !e.path.is_empty())
        .map(|e| e.path.clone())
        .ok_or_else(|| SelectError::Bad("the index lists no image-downloads catalog".into()))
}

fn aliases(p: &Product) -> impl Iterator<Item = &str> {
    p.aliases
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
}

/// Every alias offered for `arch`, sorted (for "not found" messages).
pub fn known_aliases(catalog: &Catalog, arch: &str) -> Vec<String> {
    let mut known: Vec<String> = catalog
        .products
        .values()
        .filter(|p| p.arch == arch)
        .flat_map(|p| aliases(p).map(str::to_owned))
        .collect();
    known.sort();
    known.dedup();
    known
}

/// Choose the newest usable version of the product that `name` (an alias, or a
/// fingerprint prefix of at least 12 hex digits) names for `arch`. With `squashfs` false a
/// `root.tar.xz` rootfs is required.
pub fn select(
    catalog: &Catalog,
    server: &str,
    name: &str,
    arch: &str,
    squashfs: bool,
) -> Result<Selection, SelectError> {
    let by_fingerprint = name.len() >= 12 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let mut found = false;
    // (named by alias, selection): an alias match beats a fingerprint match, then newest.
    let mut candidates: Vec<(bool, Selection)> = Vec::new();
    for (id, p) in &catalog.products {
        if p.arch != arch {
            continue;
        }
        let named = aliases(p).any(|a| a == name);
        if !named && !by_fingerprint {
            continue;
        }
        found |= named;
        for (serial, v) in &p.versions {
            let Some(s) = usable(id, p, serial, v, squashfs) else {
                continue;
            };
            if named || s.fingerprint.starts_with(&name.to_ascii_lowercase()) {
                candidates.push((named, s));
            }
        }
    }
    let best = candidates
        .into_iter()
        .max_by(|a, b| (a.0, &a.1.version).cmp(&(b.0, &b.1.version)))
        .map(|(_, s)| s);
    match best {
        Some(s) => Ok(s),
        None if found => Err(SelectError::NoUsableVersion(name.to_string())),
        None => Err(SelectError::NotFound {
            name: name.to_string(),
            server: server.to_string(),
            known: known_aliases(catalog, arch),
        }),
    }
}

/// The download plan of one version, if it has a container image we can use.
fn usable(id: &str, p: &Product, serial: &str, v: &Version, squashfs: bool) -> Option<Selection> {
    let find = |types: &[&str]| v.items.values().find(|i| types.contains(&i.ftype.as_str()));
    let download = |i: &Item, role| Download {
        path: i.path.clone(),
        sha256: i.sha256.to_ascii_lowercase(),
        size: i.size,
        role,
    };
    let (fingerprint, files) = if let Some(c) = find(COMBINED) {
        (c.sha256.to_ascii_lowercase(), vec![download(c, "image")])
    } else {
        let meta = find(METADATA)?;
        let squash = find(&["squashfs"])
            .filter(|_| squashfs)
            .zip(meta.combined_squashfs_sha256.as_ref());
        let rootxz = find(&["root.tar.xz"]).zip(
            meta.combined_rootxz_sha256
                .as_ref()
                .or(meta.combined_sha256.as_ref()),
        );
        let (rootfs, combined) = squash.or(rootxz)?;
        (
            combined.to_ascii_lowercase(),
            vec![download(meta, "metadata"), download(rootfs, "rootfs")],
        )
    };
    let valid = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid(&fingerprint) || files.iter().any(|f| !valid(&f.sha256) || f.path.is_empty()) {
        return None;
    }
    let mut properties = BTreeMap::new();
    for (k, val) in [
        ("os", &p.os),
        ("release", &p.release),
        ("variant", &p.variant),
        ("architecture", &p.arch),
    ] {
        if !val.is_empty() {
            properties.insert(k.to_string(), val.clone());
        }
    }
    properties.insert("serial".into(), serial.to_string());
    properties.insert(
        "description".into(),
        format!("{} {} {} ({serial})", p.os, p.release, p.arch)
            .trim()
            .to_string(),
    );
    Some(Selection {
        product: id.to_string(),
        version: serial.to_string(),
        fingerprint,
        files,
        properties,
    })
}

/// One of ctld's public images, as the server side describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub fingerprint: String,
    pub properties: BTreeMap<String, String>,
    pub aliases: Vec<String>,
    pub created_at: String,
    /// Host architecture name (`x86_64`).
    pub architecture: String,
    /// The stored file(s): one unified tarball, or metadata then rootfs.
    pub files: Vec<PublishedFile>,
}

/// A stored image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFile {
    /// The stored file's name (`image.tar.gz`, `metadata.tar.xz`, `rootfs.squashfs`).
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// Whether it is a squashfs (only for a rootfs).
    pub squashfs: bool,
}

/// Where the server serves an image file, relative to its base URL.
pub fn file_path(fingerprint: &str, name: &str) -> String {
    format!("images/{fingerprint}/{name}")
}

/// The index and catalog describing `images` (ctld's public images).
pub fn publish(images: &[Published]) -> (Index, Catalog) {
    let mut products: BTreeMap<String, Product> = BTreeMap::new();
    for img in images {
        let prop = |k: &str| img.properties.get(k).cloned().unwrap_or_default();
        let arch = stream_arch(&img.architecture).to_string();
        let (os, release, variant) = (prop("os"), prop("release"), prop("variant"));
        let id = if os.is_empty() || release.is_empty() {
            format!(
                "ctl:{}:{arch}",
                &img.fingerprint[..img.fingerprint.len().min(12)]
            )
        } else {
            let variant = if variant.is_empty() {
                "default"
            } else {
                variant.as_str()
            };
            format!("{os}:{release}:{arch}:{variant}").to_lowercase()
        };
        let product = products.entry(id).or_insert_with(|| Product {
            os: os.clone(),
            release: release.clone(),
            release_title: release.clone(),
            variant: variant.clone(),
            arch: arch.clone(),
            ..Product::default()
        });
        let mut all: Vec<&str> = aliases(product).collect();
        all.extend(img.aliases.iter().map(String::as_str));
        all.sort_unstable();
        all.dedup();
        product.aliases = all.join(",");
        let mut items = BTreeMap::new();
        let item = |f: &PublishedFile, ftype: &str| Item {
            ftype: ftype.to_string(),
            sha256: f.sha256.clone(),
            size: f.size,
            path: file_path(&img.fingerprint, &f.name),
            ..Item::default()
        };
        match img.files.as_slice() {
            [image] => {
                items.insert(
                    "incus_combined.tar.gz".to_string(),
                    item(image, "incus_combined.tar.gz"),
                );
            }
            [meta, rootfs] => {
                let mut m = item(meta, "incus.tar.xz");
                if rootfs.squashfs {
                    m.combined_squashfs_sha256 = Some(img.fingerprint.clone());
                    items.insert("rootfs.squashfs".to_string(), item(rootfs, "squashfs"));
                } else {
                    m.combined_rootxz_sha256 = Some(img.fingerprint.clone());
                    m.combined_sha256 = Some(img.fingerprint.clone());
                    items.insert("root.tar.xz".to_string(), item(rootfs, "root.tar.xz"));
                }
                items.insert("incus.tar.xz".to_string(), m);
            }
            _ => continue,
        }
        // Serial: the creation time, made unique by the fingerprint.
        let serial = format!(
            "{}_{}",
            img.created_at
                .chars()
                .filter(char::is_ascii_digit)
                .take(12)
                .collect::<String>(),
            &img.fingerprint[..img.fingerprint.len().min(12)]
        );
        product.versions.insert(serial, Version { items });
    }
    let ids: Vec<String> = products.keys().cloned().collect();
    let mut index = Index {
        format: "index:1.0".into(),
        index: BTreeMap::new(),
    };
    index.index.insert(
        "images".into(),
        IndexEntry {
            datatype: "image-downloads".into(),
            path: "streams/v1/images.json".into(),
            format: "products:1.0".into(),
            products: ids,
        },
    );
    let catalog = Catalog {
        content_id: "images".into(),
        datatype: "image-downloads".into(),
        format: "products:1.0".into(),
        products,
    };
    (index, catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    const H4: &str = "4444444444444444444444444444444444444444444444444444444444444444";

    /// A catalog shaped like images.linuxcontainers.org's.
    fn catalog() -> Catalog {
        serde_json::from_value(serde_json::json!({
            "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
            "products": {
                "debian:bookworm:amd64:default": {
                    "aliases": "debian/bookworm/default,debian/bookworm,debian/12",
                    "arch": "amd64", "os": "Debian", "release": "bookworm",
                    "release_title": "bookworm", "variant": "default",
                    "versions": {
                        "20261127_05:24": {"items": {
                            "incus.tar.xz": {"ftype": "incus.tar.xz", "sha256": H1, "size": 10,
                                "path": "images/debian/bookworm/amd64/default/20261127_05:24/incus.tar.xz",
                                "combined_squashfs_sha256": H2, "combined_rootxz_sha256": H3},
                            "rootfs.squashfs": {"ftype": "squashfs", "sha256": H4, "size": 20,
                                "path": "images/debian/bookworm/amd64/default/20261127_05:24/rootfs.squashfs"},
                            "root.tar.xz": {"ftype": "root.tar.xz", "sha256": H1, "size": 30,
                                "path": "images/debian/bookworm/amd64/default/20261127_05:24/root.tar.xz"}
                        }},
                        "20261126_05:24": {"items": {
                            "incus.tar.xz": {"ftype": "incus.tar.xz", "sha256": H1, "size": 10,
                                "path": "old/incus.tar.xz", "combined_squashfs_sha256": H1},
                            "rootfs.squashfs": {"ftype": "squashfs", "sha256": H4, "size": 20,
                                "path": "old/rootfs.squashfs"}
                        }}
                    }
                },
                "debian:bookworm:arm64:default": {
                    "aliases": "debian/bookworm/default,debian/bookworm,debian/12",
                    "arch": "arm64", "os": "Debian", "release": "bookworm", "variant": "default",
                    "versions": {}
                },
                "alpine:edge:amd64:default": {
                    "aliases": "alpine/edge", "arch": "amd64", "os": "Alpine", "release": "edge",
                    "variant": "default",
                    "versions": {"1": {"items": {
                        "disk.qcow2": {"ftype": "disk-kvm.img", "sha256": H1, "size": 1, "path": "x"}
                    }}}
                }
            }
        }))
        .expect("catalog parses")
    }

    #[test]
    fn picks_the_newest_version_and_prefers_squashfs() {
        let s = select(&catalog(), "srv", "debian/12", "amd64", true).expect("selected");
        assert_eq!(s.product, "debian:bookworm:amd64:default");
        assert_eq!(s.version, "20261127_05:24");
        assert_eq!(s.fingerprint, H2);
        assert_eq!(s.files.len(), 2);
        assert_eq!(s.files[0].role, "metadata");
        assert_eq!(s.files[1].sha256, H4);
        assert_eq!(s.properties["os"], "Debian");
        assert_eq!(s.properties["serial"], "20261127_05:24");
    }

    #[test]
    fn falls_back_to_root_tar_xz_without_squashfs_support() {
        let s = select(&catalog(), "srv", "debian/bookworm", "amd64", false).expect("selected");
        assert_eq!(s.fingerprint, H3);
        assert!(s.files[1].path.ends_with("root.tar.xz"));
    }

    #[test]
    fn unknown_alias_lists_what_is_known_for_this_arch() {
        match select(&catalog(), "srv", "debian/99", "amd64", true) {
            Err(SelectError::NotFound { known, server, .. }) => {
                assert_eq!(server, "srv");
                assert_eq!(
                    known,
                    vec![
                        "alpine/edge",
                        "debian/12",
                        "debian/bookworm",
                        "debian/bookworm/default"
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Only a VM image: known, but nothing usable for a container.
        assert_eq!(
            select(&catalog(), "srv", "alpine/edge", "amd64", true),
            Err(SelectError::NoUsableVersion("alpine/edge".into()))
        );
    }

    #[test]
    fn selects_by_fingerprint_prefix() {
        let s = select(&catalog(), "srv", &H3[..16], "amd64", false).expect("selected");
        assert_eq!(s.fingerprint, H3);
    }

    #[test]
    fn index_points_at_the_catalog() {
        let idx: Index = serde_json::from_str(
            r#"{"format":"index:1.0","index":{"images":{"datatype":"image-downloads",
            "path":"streams/v1/images.json","format":"products:1.0","products":["a"]}}}"#,
        )
        .expect("parses");
        assert_eq!(catalog_path(&idx).expect("path"), "streams/v1/images.json");
        assert!(catalog_path(&Index::default()).is_err());
    }

    #[test]
    fn published_tree_round_trips_through_select() {
        let mut props = BTreeMap::new();
        props.insert("os".to_string(), "BusyBox".to_string());
        props.insert("release".to_string(), "1.35".to_string());
        let images = vec![
            Published {
                fingerprint: H1.into(),
                properties: props.clone(),
                aliases: vec!["busybox".into()],
                created_at: "2026-11-28T10:00:00Z".into(),
                architecture: "x86_64".into(),
                files: vec![PublishedFile {
                    name: "image.tar.gz".into(),
                    sha256: H1.into(),
                    size: 5,
                    squashfs: false,
                }],
            },
            Published {
                fingerprint: H2.into(),
                properties: BTreeMap::new(),
                aliases: vec!["split/one".into()],
                created_at: "2026-11-28T11:00:00Z".into(),
                architecture: "x86_64".into(),
                files: vec![
                    PublishedFile {
                        name: "metadata.tar.xz".into(),
                        sha256: H3.into(),
                        size: 1,
                        squashfs: false,
                    },
                    PublishedFile {
                        name: "rootfs.squashfs".into(),
                        sha256: H4.into(),
                        size: 2,
                        squashfs: true,
                    },
                ],
            },
        ];
        let (index, catalog) = publish(&images);
        assert_eq!(index.index["images"].products.len(), 2);
        let json = serde_json::to_string(&catalog).expect("serializes");
        let catalog: Catalog = serde_json::from_str(&json).expect("parses");
        let s = select(&catalog, "me", "busybox", "amd64", true).expect("busybox");
        assert_eq!(s.fingerprint, H1);
        assert_eq!(s.files[0].path, format!("images/{H1}/image.tar.gz"));
        let s = select(&catalog, "me", "split/one", "amd64", true).expect("split");
        assert_eq!(s.fingerprint, H2);
        assert_eq!(s.files[1].sha256, H4);
        assert!(select(&catalog, "me", "split/one", "amd64", false).is_err());
    }
}

/// Properties of image selection over arbitrary catalogs a server may send.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = Item> {
        (
            prop::sample::select(vec![
                "incus_combined.tar.gz",
                "lxd_combined.tar.gz",
                "incus.tar.xz",
                "lxd.tar.xz",
                "root.tar.xz",
                "squashfs",
                "disk-kvm.img",
                "",
            ]),
            "[0-9a-f]{0,64}",
            any::<u64>(),
            "[a-z/._]{0,12}",
            prop::option::of("[0-9a-f]{0,64}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(ftype, sha256, size, path, combined, rootxz)| Item {
                ftype: ftype.into(),
                sha256,
                size,
                path,
                combined_sha256: combined,
                combined_squashfs_sha256: None,
                combined_rootxz_sha256: rootxz,
            })
    }

    fn catalog() -> impl Strategy<Value = Catalog> {
        let version = prop::collection::btree_map("[a-z0-9]{1,6}", item(), 0..4)
            .prop_map(|items| Version { items });
        let product = (
            "[a-z0-9/,. ]{0,16}",
            prop::sample::select(vec!["amd64", "arm64", ""]),
            prop::collection::btree_map("[0-9_]{1,8}", version, 0..3),
        )
            .prop_map(|(aliases, arch, versions)| Product {
                aliases,
                arch: arch.into(),
                versions,
                ..Product::default()
            });
        prop::collection::btree_map("[a-z0-9:]{1,12}", product, 0..5).prop_map(|products| Catalog {
            products,
            ..Catalog::default()
        })
    }

    proptest! {
        #[test]
        fn a_selection_comes_from_the_catalog_for_the_asked_arch(
            c in catalog(),
            name in "[a-z0-9/]{0,8}",
            squashfs in any::<bool>(),
        ) {
            if let Ok(sel) = select(&c, "srv", &name, "amd64", squashfs) {
                let p = c.products.get(&sel.product);
                prop_assert!(p.is_some_and(|p| p.arch == "amd64"));
                let v = p.and_then(|p| p.versions.get(&sel.version));
                prop_assert!(v.is_some());
                // Every file to download is an item of that version, with its checksum.
                for f in &sel.files {
                    prop_assert!(v.is_some_and(|v| v.items.values().any(|i| i.path == f.path && i.sha256 == f.sha256)));
                }
                prop_assert!(!sel.files.is_empty());
            }
        }

        #[test]
        fn any_json_is_read_or_refused(text in ".{0,256}") {
            let _ = serde_json::from_str::<Catalog>(&text);
            let _ = serde_json::from_str::<Index>(&text);
        }
    }
}
