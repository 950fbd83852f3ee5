//! Incus image templates, minimally: `metadata.yaml` may map a file in the container to a
//! template under `templates/` and the moments it is written (`when: [create, copy]`);
//! when an instance is created its templates are rendered into its overlay upper layer, so
//! the shared image rootfs stays untouched and each container gets its own `/etc/hostname`.
//!
//! The renderer is a small subset of pongo2 (what Incus uses): `{{ name }}` expressions whose
//! name is `container.name`/`instance.name`, `container.type`/`instance.type`, `trigger`,
//! `image.<property>` or `properties.<key>` (the entry's own). An unknown name renders as
//! nothing, as pongo2 does; a filter after `|` is ignored; `{% %}` blocks are not
//! supported and stay as they are.
//!
//! Storage: an image keeps its templates as `images/<fp>/templates/<file>` and the entries
//! of its `metadata.yaml` as `images/<fp>/templates.yaml`. Paths come from the image, so
//! they are checked: absolute, no `..`, a template is one plain file name, and parents in
//! the upper layer are made by us (never through a symlink).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ImageError;

/// The largest template file read (they are small text files).
pub const MAX_TEMPLATE: u64 = 1 << 20;
/// The most templates an image may carry.
pub const MAX_TEMPLATES: usize = 64;
/// The file, next to `templates/`, holding an image's template entries.
pub const ENTRIES_FILE: &str = "templates.yaml";

/// One `templates:` entry of `metadata.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateEntry {
    /// When it is written: `create`, `copy`, `start`, `rename`.
    #[serde(default)]
    pub when: Vec<String>,
    /// Write it only if the file does not exist yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_only: bool,
    /// The file name under `templates/`.
    #[serde(default)]
    pub template: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// What a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The instance's name.
    pub name: &'a str,
    /// What happens now (`create`, `copy`...).
    pub trigger: &'a str,
    /// The image's properties.
    pub image: &'a BTreeMap<String, String>,
    /// The entry's own properties.
    pub properties: &'a BTreeMap<String, String>,
}

fn lookup(expr: &str, ctx: &Context<'_>) -> String {
    let name = expr.split('|').next().unwrap_or_default().trim();
    match name {
        "container.name" | "instance.name" => ctx.name.to_string(),
        "container.type" | "instance.type" => "container".to_string(),
        "trigger" => ctx.trigger.to_string(),
        _ => {
            let found = if let Some(k) = name.strip_prefix("image.") {
                ctx.image.get(k)
            } else if let Some(k) = name.strip_prefix("properties.") {
                ctx.properties.get(k)
            } else {
                None
            };
            found.cloned().unwrap_or_default()
        }
    }
}

/// The first construct of `template` [`render`] does not handle (pongo2 tags `{% %}`,
/// comments `{# #}`, function calls or filters inside `{{ }}`), if any: such a template is
/// left out rather than written half-rendered.
pub fn unsupported(template: &str) -> Option<&'static str> {
    if template.contains("{%") {
        return Some("{% %} tags");
    }
    if template.contains("{#") {
        return Some("{# #} comments");
    }
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            return Some("an unclosed {{");
        };
        let expr = rest[start + 2..start + 2 + len].trim();
        if !expr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'|' | b' '))
        {
            return Some("expressions other than plain names");
        }
        rest = &rest[start + 2 + len + 2..];
    }
    None
}

/// Render `template`: every `{{ expr }}` replaced by its value.
pub fn render(template: &str, ctx: &Context<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&lookup(&rest[start + 2..start + 2 + len], ctx));
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The relative path inside the rootfs of a template target (`/etc/hostname` →
/// `etc/hostname`); refused unless absolute with only plain components.
pub fn target_path(path: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(path);
    let bad = || {
        ImageError::Invalid(format!(
            "template target \"{path}\" is not a plain absolute path"
        ))
    };
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => rel.push(n),
            _ => return Err(bad()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad());
    }
    Ok(rel)
}

/// Whether `name` can be a file under `templates/`: one plain component.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Keep an image's templates in its directory `dir`: the files (name, content) under
/// `dir/templates/` and the entries as `dir/templates.yaml`. Nothing is written when there
/// are no entries.
pub fn store(
    dir: &Path,
    entries: &BTreeMap<String, TemplateEntry>,
    files: &[(String, Vec<u8>)],
) -> Result<(), ImageError> {
    if entries.is_empty() {
        return Ok(());
    }
    for (target, entry) in entries {
        target_path(target)?;
        if !plain_file_name(&entry.template) {
            return Err(ImageError::Invalid(format!(
                "template \"{}\" for {target} is not a plain file name",
                entry.template
            )));
        }
    }
    let tdir = dir.join("templates");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&tdir)
        .map_err(io_at(&tdir))?;
    for (name, content) in files {
        if !plain_file_name(name) {
            return Err(ImageError::Invalid(format!(
                "template file \"{name}\" is not a plain file name"
            )));
        }
        let p = tdir.join(name);
        std::fs::write(&p, content).map_err(io_at(&p))?;
    }
    let yaml = serde_yaml_ng::to_string(entries)
        .map_err(|e| ImageError::Build(format!("template entries: {e}")))?;
    let p = dir.join(ENTRIES_FILE);
    std::fs::write(&p, yaml).map_err(io_at(&p))
}

/// The template entries an image directory keeps (none when it has no templates).
pub fn load(dir: &Path) -> Result<BTreeMap<String, TemplateEntry>, ImageError> {
    let p = dir.join(ENTRIES_FILE);
    match std::fs::read(&p) {
        Ok(text) => serde_yaml_ng::from_slice(&text)
            .map_err(|e| ImageError::Invalid(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(io_at(&p)(e)),
    }
}

/// Render the templates of the image in `image_dir` whose `when` has `trigger` into the
/// instance's `upper` layer (over the image's `lower` rootfs). Returns the paths written,
/// relative to the rootfs.
pub fn apply(
    image_dir: &Path,
    upper: &Path,
    name: &str,
    trigger: &str,
    image_properties: &BTreeMap<String, String>,
) -> Result<Vec<PathBuf>, ImageError> {
    let entries = load(image_dir)?;
    let lower = image_dir.join("rootfs");
    let mut written = Vec::new();
    for (target, entry) in &entries {
        if !entry.when.iter().any(|w| w == trigger) {
            continue;
        }
        let rel = target_path(target)?;
        if !plain_file_name(&entry.template) {
            return Err(ImageError::Invalid(format!(
                "template \"{}\" is not a plain file name",
                entry.template
            )));
        }
        if entry.create_only
            && (upper.join(&rel).symlink_metadata().is_ok()
                || lower.join(&rel).symlink_metadata().is_ok())
        {
            continue;
        }
        let tpath = image_dir.join("templates").join(&entry.template);
        let mut text = String::new();
        std::fs::File::open(&tpath)
            .map_err(io_at(&tpath))?
            .take(MAX_TEMPLATE)
            .read_to_string(&mut text)
            .map_err(io_at(&tpath))?;
        if let Some(what) = unsupported(&text) {
            tracing::warn!(template = %entry.template, target, what, "template uses syntax ctl does not render: left out");
            continue;
        }
        let ctx = Context {
            name,
            trigger,
            image: image_properties,
            properties: &entry.properties,
        };
        if write_in_upper(upper, &lower, &rel, render(&text, &ctx).as_bytes())? {
            written.push(rel);
        } else {
            tracing::warn!(
                target,
                "template target is under a symlink or file in the image: left out"
            );
        }
    }
    Ok(written)
}

/// Write `content` at `rel` in `upper`, making missing parents (with the mode and owner the
/// lower layer's directory has, 0755 root otherwise); never follows a symlink in `upper`.
/// `false` (nothing written) when a parent is not a directory in the lower layer.
fn write_in_upper(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    content: &[u8],
) -> Result<bool, ImageError> {
    let mut dir = upper.to_path_buf();
    let mut lower_dir = lower.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        dir.push(c);
        lower_dir.push(c);
        match dir.symlink_metadata() {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                return Err(ImageError::Invalid(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Err(_) => {
                let below = lower_dir.symlink_metadata().ok();
                // A directory here would hide what the image has at this path (a usrmerge
                // symlink such as /lib -> usr/lib, or a file): leave the template out.
                if below.as_ref().is_some_and(|m| !m.is_dir()) {
                    return Ok(false);
                }
                let mode = below
                    .as_ref()
                    .map_or(0o755, |m| m.permissions().mode() & 0o7777);
                std::fs::DirBuilder::new()
                    .mode(mode)
                    .create(&dir)
                    .map_err(io_at(&dir))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io_at(&dir))?;
                if let Some(m) = &below {
                    use std::os::unix::fs::MetadataExt;
                    std::os::unix::fs::lchown(&dir, Some(m.uid()), Some(m.gid()))
                        .map_err(io_at(&dir))?;
                }
            }
        }
    }
    let file = upper.join(rel);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .map_err(io_at(&file))?;
    f.write_all(content).map_err(io_at(&file))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn ctx<'a>(
        image: &'a BTreeMap<String, String>,
        props: &'a BTreeMap<String, String>,
    ) -> Context<'a> {
        Context {
            name: "c1",
            trigger: "create",
            image,
            properties: props,
        }
    }

    #[test]
    fn renders_the_supported_variables() {
        let mut image = BTreeMap::new();
        image.insert("os".to_string(), "Debian".to_string());
        let mut props = BTreeMap::new();
        props.insert("k".to_string(), "v".to_string());
        let c = ctx(&image, &props);
        for (tpl, want) in [
            ("{{ container.name }}\n", "c1\n"),
            ("127.0.1.1\t{{instance.name}}\n", "127.0.1.1\tc1\n"),
            ("{{ container.type }} {{ trigger }}", "container create"),
            ("{{ image.os }}/{{ properties.k }}", "Debian/v"),
            ("[{{ unknown.thing }}]", "[]"),
            ("{{ container.name | lower }}", "c1"),
            ("no variables", "no variables"),
            ("{% if x %}kept{% endif %}", "{% if x %}kept{% endif %}"),
            ("unclosed {{ container.name", "unclosed {{ container.name"),
            ("{{a}}{{ instance.name }}{{", "c1{{"),
        ] {
            assert_eq!(render(tpl, &c), want, "{tpl:?}");
        }
    }

    #[test]
    fn target_paths_must_be_plain_and_absolute() {
        assert_eq!(
            target_path("/etc/hostname").ok(),
            Some(PathBuf::from("etc/hostname"))
        );
        for bad in ["etc/hostname", "/etc/../../x", "/", "/./etc/../x", ""] {
            assert!(target_path(bad).is_err(), "{bad}");
        }
        assert!(plain_file_name("hosts.tpl"));
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn applies_create_templates_into_the_upper_layer() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let image = tmp.path().join("image");
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(image.join("rootfs/etc"))?;
        std::fs::set_permissions(
            image.join("rootfs/etc"),
            std::fs::Permissions::from_mode(0o750),
        )?;
        std::fs::write(image.join("rootfs/etc/keep"), "lower")?;
        std::fs::create_dir(&upper)?;
        let mut entries = BTreeMap::new();
        let entry = |when: &[&str], template: &str, create_only: bool| TemplateEntry {
            when: when.iter().map(|s| s.to_string()).collect(),
            create_only,
            template: template.into(),
            properties: BTreeMap::new(),
        };
        entries.insert(
            "/etc/hostname".to_string(),
            entry(&["create", "copy"], "hostname.tpl", false),
        );
        entries.insert(
            "/etc/keep".to_string(),
            entry(&["create"], "hostname.tpl", true),
        );
        entries.insert(
            "/etc/on-start".to_string(),
            entry(&["start"], "hostname.tpl", false),
        );
        store(
            &image,
            &entries,
            &[(
                "hostname.tpl".to_string(),
                b"{{ container.name }}\n".to_vec(),
            )],
        )?;
        assert_eq!(load(&image)?, entries);
        let written = apply(&image, &upper, "web-1", "create", &BTreeMap::new())?;
        assert_eq!(written, [PathBuf::from("etc/hostname")]);
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/hostname"))?,
            "web-1\n"
        );
        assert_eq!(
            upper.join("etc").metadata()?.permissions().mode() & 0o7777,
            0o750,
            "a parent made in the upper layer keeps the lower layer's mode"
        );
        assert!(
            !upper.join("etc/keep").exists(),
            "create_only and present below"
        );
        assert!(!upper.join("etc/on-start").exists());
        // Left out: a template ctl cannot render, and a target under a usrmerge symlink.
        let image = tmp.path().join("image2");
        std::fs::create_dir_all(image.join("rootfs/etc"))?;
        std::fs::create_dir_all(image.join("rootfs/usr/lib"))?;
        std::os::unix::fs::symlink("usr/lib", image.join("rootfs/lib"))?;
        entries.insert(
            "/etc/cloud.cfg".to_string(),
            entry(&["create"], "cloud.tpl", false),
        );
        entries.insert(
            "/lib/x.conf".to_string(),
            entry(&["create"], "hostname.tpl", false),
        );
        store(
            &image,
            &entries,
            &[
                (
                    "hostname.tpl".to_string(),
                    b"{{ container.name }}\n".to_vec(),
                ),
                (
                    "cloud.tpl".to_string(),
                    b"{% if config_get(\"user.x\", \"\") %}x{% endif %}\n".to_vec(),
                ),
            ],
        )?;
        let upper2 = tmp.path().join("upper2");
        std::fs::create_dir(&upper2)?;
        let written = apply(&image, &upper2, "web-2", "create", &BTreeMap::new())?;
        // (etc/keep: create_only, and this image has none below.)
        assert_eq!(
            written,
            [PathBuf::from("etc/hostname"), PathBuf::from("etc/keep")]
        );
        assert!(!upper2.join("etc/cloud.cfg").exists());
        assert!(
            !upper2.join("lib").exists(),
            "a dir in upper would hide /lib -> usr/lib"
        );
        assert_eq!(
            unsupported("{{ instance.name }} {{ image.os | lower }}"),
            None
        );
        assert!(unsupported("{{ config_get(\"a\") }}").is_some());
        assert!(unsupported("{# note #}").is_some());
        // An image without templates writes nothing.
        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain)?;
        assert!(apply(&plain, &upper, "x", "create", &BTreeMap::new())?.is_empty());
        Ok(())
    }

    #[test]
    fn hostile_entries_are_refused() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut entries = BTreeMap::new();
        entries.insert(
            "/../../outside".to_string(),
            TemplateEntry {
                when: vec!["create".into()],
                template: "x.tpl".into(),
                ..TemplateEntry::default()
            },
        );
        assert!(store(tmp.path(), &entries, &[]).is_err());
        let mut entries = BTreeMap::new();
        entries.insert(
            "/etc/x".to_string(),
            TemplateEntry {
                when: vec!["create".into()],
                template: "../../x.tpl".into(),
                ..TemplateEntry::default()
            },
        );
        assert!(store(tmp.path(), &entries, &[]).is_err());
        // A symlink in the upper layer is never followed.
        let upper = tmp.path().join("upper");
        std::fs::create_dir(&upper)?;
        std::os::unix::fs::symlink(tmp.path(), upper.join("etc"))?;
        let r = write_in_upper(&upper, tmp.path(), Path::new("etc/hostname"), b"x");
        assert!(r.is_err());
        assert!(!tmp.path().join("hostname").exists());
        Ok(())
    }
}
