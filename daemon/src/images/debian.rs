//! The local Debian builder: `debian/<suite>` (`debian/bookworm`, `debian/12`, ...) is built
//! on first use with debootstrap from the host's own Debian mirror, so `ctl launch
//! debian/bookworm c1` works wherever apt works, with no image server.
//!
//! Steps, each reported as a progress stage of the create operation:
//! 1. **resolving mirror**: `--debian-mirror`, else the `deb` URI of the main Debian archive
//!    in the host's apt sources (`sources.list`, `*.list`, deb822 `*.sources`;
//!    [`main_archive`] is the pure choice). No mirror host is written into this code.
//! 2. **debootstrap** `--variant=minbase` plus sysvinit, ifupdown with a DHCP client,
//!    iproute2, ca-certificates, procps, run as a child in `$CTL_DIR/tmp` with
//!    `--debian-installer`, whose `P: now end STAGE` lines become stages with percentages
//!    ([`DebootstrapLog`]). Whatever it mounted in its target is detached afterwards,
//!    success or not ([`crate::worker::mounts`]).
//! 3. The result is kept in the **build cache** (`--build-cache`, default `$CTL_DIR/cache`)
//!    as `debian-<suite>-<arch>-<YYYYMMDD>.tar.zst`, written to a temporary name and
//!    renamed, so a run on the same day skips debootstrap. Every build, fresh or cached,
//!    continues from that file (**unpacking**), so both give the same image.
//! 4. **customising** ([`customise`]): an inittab for a container (SIGPWR halts cleanly, one
//!    getty on `/dev/console`), `eth0` on DHCP as `allow-hotplug` (a container without a
//!    network boots without waiting), `LANG=C.UTF-8`, no `/etc/hostname` or host
//!    `resolv.conf`, no apt caches, an empty `/dev`.
//! 5. **packing image**: a deterministic unified tarball (zstd) with `hostname.tpl` and
//!    `hosts.tpl` templates ([`super::templates`]); its sha256 is the fingerprint. The image
//!    is stored as `cached` with both aliases of its suite.
//!
//! A build that fails leaves no image, alias or directory behind.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::progress::Progress;
use super::tarball::{Compression, ImageMetadata, Tree, write_image_file};
use super::templates::TemplateEntry;
use super::unpack::{Layout, Limits, unpack};
use super::{ImageError, ImageStore, host_architecture};
use crate::db;
use crate::worker::mounts::unmount_under;

/// A Debian release the daemon can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub codename: &'static str,
    pub version: &'static str,
}

/// The suites `debian/<codename>` and `debian/<version>` name.
pub const SUITES: &[Suite] = &[
    Suite {
        codename: "bullseye",
        version: "11",
    },
    Suite {
        codename: "bookworm",
        version: "12",
    },
    Suite {
        codename: "trixie",
        version: "13",
    },
];

/// What debootstrap installs besides `minbase`: an init system and what a system container
/// needs (networking by DHCP, TLS roots, `ps`).
pub const PACKAGES: &[&str] = &[
    "sysvinit-core",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "ca-certificates",
    "procps",
];

const ALIAS_PREFIX: &str = "debian/";

impl Suite {
    /// Its aliases: `debian/<codename>`, `debian/<version>`.
    pub fn aliases(&self) -> [String; 2] {
        [
            format!("{ALIAS_PREFIX}{}", self.codename),
            format!("{ALIAS_PREFIX}{}", self.version),
        ]
    }
}

/// The suite an alias names (`debian/bookworm`, `debian/12`), if it is one we build.
pub fn suite_for_alias(alias: &str) -> Option<Suite> {
    let name = alias.strip_prefix(ALIAS_PREFIX)?;
    SUITES
        .iter()
        .find(|s| s.codename == name || s.version == name)
        .copied()
}

/// Every alias the builder answers to.
pub fn known_aliases() -> Vec<String> {
    SUITES.iter().flat_map(Suite::aliases).collect()
}

/// Debian's name for the host architecture.
pub fn debian_arch() -> Result<&'static str, ImageError> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => {
            return Err(ImageError::Build(format!(
                "no Debian architecture for {other}"
            )));
        }
    })
}

// ----- the mirror -----

/// One source of the host's apt configuration, in either format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptSource {
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub enabled: bool,
}

/// Parse the one-line format (`deb [opts] uri suite component...`); comments and `deb-src`
/// lines are kept out by [`main_archive`], malformed lines are skipped.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut words = line.split_whitespace().peekable();
        let Some(kind) = words.next() else { continue };
        // Options: `[a=b c=d]`, possibly spread over several words.
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            types: vec![kind.to_string()],
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            enabled: true,
        });
    }
    out
}

/// Parse the deb822 format (`*.sources`): stanzas of `Field: value` separated by blank
/// lines, `#` comment lines, continuation lines starting with white space.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        if fields.is_empty() {
            return;
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_else(Vec::new)
        };
        let enabled = get("Enabled")
            .first()
            .is_none_or(|v: &String| !v.eq_ignore_ascii_case("no"));
        out.push(AptSource {
            types: get("Types"),
            uris: get("URIs"),
            suites: get("Suites"),
            components: get("Components"),
            enabled,
        });
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields);
    out
}

/// Suite names of the main archive (not `-security`, `-updates`, `-backports`, and not a
/// third-party repository's own suite).
const ARCHIVE_SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "buster",
    "stretch",
    "sid",
    "stable",
    "testing",
    "unstable",
    "oldstable",
    "oldoldstable",
];

/// The URI of the main Debian archive among `sources`: the first enabled binary (`deb`)
/// source with a plain release suite and the `main` component. Without a trailing `/`.
pub fn main_archive(sources: &[AptSource]) -> Option<String> {
    sources
        .iter()
        .filter(|s| s.enabled && s.types.iter().any(|t| t == "deb"))
        .filter(|s| s.components.iter().any(|c| c == "main"))
        .filter(|s| {
            s.suites
                .iter()
                .any(|x| ARCHIVE_SUITES.contains(&x.as_str()))
        })
        .flat_map(|s| s.uris.iter())
        .filter(|u| check_mirror(u).is_ok() && !u.trim_end_matches('/').ends_with("-security"))
        // A Debian archive's path ends in `/debian`; a third-party repository with the
        // same suite names only when nothing else fits (its Release would then fail the
        // signature check against Debian's keyring anyway).
        .min_by_key(|u| !u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Debian's archive keyring: debootstrap checks the mirror's Release signature with it.
pub const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A mirror must be an http(s), ftp or file URL.
pub fn check_mirror(url: &str) -> Result<(), ImageError> {
    let ok = ["http://", "https://", "ftp://", "file:/"]
        .iter()
        .any(|p| url.starts_with(p) && url.len() > p.len());
    if ok && !url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(ImageError::Invalid(format!(
            "\"{url}\" is not a mirror URL (http://, https://, ftp:// or file:/)"
        )))
    }
}

/// The main Debian archive the host's apt uses, read from `apt_dir` (`/etc/apt`):
/// `sources.list`, then `sources.list.d/*.list` and `*.sources` in name order.
pub fn host_mirror(apt_dir: &Path) -> Result<String, ImageError> {
    let mut sources = Vec::new();
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        sources.extend(parse_one_line(&text));
    }
    let d = apt_dir.join("sources.list.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let parse = match f.extension().and_then(|e| e.to_str()) {
            Some("list") => parse_one_line,
            Some("sources") => parse_deb822,
            _ => continue,
        };
        if let Ok(text) = std::fs::read_to_string(&f) {
            sources.extend(parse(&text));
        }
    }
    main_archive(&sources).ok_or_else(|| {
        ImageError::Build(format!(
            "no Debian mirror in the host's apt sources under {} (set ctld --debian-mirror)",
            apt_dir.display()
        ))
    })
}

// ----- debootstrap's progress -----

/// Reads debootstrap's `--debian-installer` protocol (`P:` progress, `E:`/`EA:`/`EF:`
/// errors, `I:` info) line by line: what to report, and why it failed.
#[derive(Debug, Default)]
pub struct DebootstrapLog {
    stage: String,
    last: Option<(&'static str, u8)>,
    args: Vec<String>,
    errors: Vec<String>,
    /// The last lines that were not protocol (dpkg's output), for a failure message.
    tail: VecDeque<String>,
}

/// A user-facing stage for a debootstrap stage name.
pub fn stage_label(name: &str) -> &'static str {
    match name {
        "DOWNREL" | "DOWNRELSIG" | "DOWNPKGS" | "DOWNMAINPKGS" | "SIZEDEBS" => {
            "debootstrap: reading package lists"
        }
        "DOWNDEBS" => "debootstrap: retrieving packages",
        "EXTRACTPKGS" => "debootstrap: extracting packages",
        "INSTCORE" => "debootstrap: installing core packages",
        "UNPACKREQ" => "debootstrap: unpacking required packages",
        "CONFREQ" => "debootstrap: configuring required packages",
        "UNPACKBASE" => "debootstrap: unpacking the base system",
        "CONFBASE" => "debootstrap: configuring the base system",
        _ => "debootstrap",
    }
}

fn printf(fmt: &str, args: &[String]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut rest = fmt;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest[i + 1..].chars().next() {
            Some('s') | Some('d') => out.push_str(args.next().map_or("", String::as_str)),
            Some('%') => out.push('%'),
            Some(c) => {
                out.push('%');
                out.push(c);
            }
            None => out.push('%'),
        }
        rest = rest.get(i + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

impl DebootstrapLog {
    /// Take one line of output; returns a stage and percent to report when it moved on.
    pub fn line(&mut self, line: &str) -> Option<(&'static str, u8)> {
        let (tag, rest) = line.split_once(": ").unwrap_or((line, ""));
        match tag {
            "P" => {
                let mut w = rest.split_whitespace();
                let now: u64 = w.next()?.parse().ok()?;
                let end: u64 = w.next()?.parse().ok()?;
                if let Some(name) = w.next() {
                    self.stage = name.to_string();
                }
                let label = stage_label(&self.stage);
                let percent = (now.min(end) * 100).checked_div(end).unwrap_or(0) as u8;
                // Parallel downloads report out of order: a stage only moves forward.
                let moved = match self.last {
                    Some((l, p)) if l == label => percent > p,
                    _ => true,
                };
                if moved {
                    self.last = Some((label, percent));
                    return Some((label, percent));
                }
                None
            }
            "EA" | "WA" | "IA" | "PA" => {
                self.args.push(rest.to_string());
                None
            }
            "EF" => {
                let args = std::mem::take(&mut self.args);
                self.errors.push(printf(rest, &args));
                None
            }
            "WF" => {
                let args = std::mem::take(&mut self.args);
                tracing::warn!(message = %printf(rest, &args), "debootstrap");
                None
            }
            "IF" | "PF" => {
                let args = std::mem::take(&mut self.args);
                tracing::debug!(message = %printf(rest, &args), "debootstrap");
                None
            }
            "E" | "W" | "I" => {
                self.args.clear();
                None
            }
            _ => {
                if self.tail.len() == 20 {
                    self.tail.pop_front();
                }
                self.tail.push_back(line.to_string());
                None
            }
        }
    }

    /// What went wrong: debootstrap's own error messages, else the last output lines.
    pub fn failure(&self, stderr: &[String]) -> String {
        if !self.errors.is_empty() {
            return self.errors.join("; ");
        }
        let lines: Vec<&str> = stderr
            .iter()
            .map(String::as_str)
            .chain(self.tail.iter().map(String::as_str))
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn find_debootstrap() -> Option<PathBuf> {
    CHILD_PATH
        .split(':')
        .map(|d| Path::new(d).join("debootstrap"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Run debootstrap for `suite` into `target`, reporting its stages. Mounts it leaves in
/// `target` are the caller's to detach.
async fn debootstrap(
    suite: Suite,
    arch: &str,
    mirror: &str,
    target: &Path,
    progress: &Progress,
) -> Result<(), ImageError> {
    let program = find_debootstrap().ok_or_else(|| {
        ImageError::Build("debootstrap is not installed (apt-get install debootstrap)".into())
    })?;
    // Never install unverified packages as root: require the signature check.
    if !Path::new(ARCHIVE_KEYRING).is_file() {
        return Err(ImageError::Build(format!(
            "{ARCHIVE_KEYRING} is missing (apt-get install debian-archive-keyring): \
             the mirror's packages cannot be verified"
        )));
    }
    // `--debian-installer` writes its machine-readable progress to fd 3: point it at stdout.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 3>&1")
        .arg(&program)
        .arg("--debian-installer")
        .arg("--force-check-gpg")
        .arg(format!("--keyring={ARCHIVE_KEYRING}"))
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--arch={arch}"))
        .arg(suite.codename)
        .arg(target)
        .arg(mirror)
        .env("PATH", CHILD_PATH)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::Build(format!("start {}: {e}", program.display())))?;
    let stderr = child.stderr.take().map(|e| {
        tokio::spawn(async move {
            let mut lines = BufReader::new(e).lines();
            let mut tail = VecDeque::new();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(line = %l, "debootstrap stderr");
                if tail.len() == 10 {
                    tail.pop_front();
                }
                tail.push_back(l);
            }
            Vec::from(tail)
        })
    });
    let mut log = DebootstrapLog::default();
    if let Some(out) = child.stdout.take() {
        let mut out = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match out.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if let Some((stage, percent)) = log.line(line.trim_end()) {
                        progress.report(stage, Some(percent));
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| ImageError::Build(format!("wait for debootstrap: {e}")))?;
    let stderr = match stderr {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    if status.success() {
        return Ok(());
    }
    Err(ImageError::Build(format!(
        "debootstrap {} from {mirror} failed ({status}): {}",
        suite.codename,
        log.failure(&stderr)
    )))
}

// ----- customising -----

/// `/etc/inittab` for a container: no ttys but the console, and SIGPWR (what ctld sends to
/// stop an image whose init is not busybox or systemd) switches to runlevel 0, which runs
/// the `K` scripts and halts (the kernel then ends the container's PID namespace).
pub const INITTAB: &str = "\
# /etc/inittab of a ctl system container (sysvinit).
id:2:initdefault:
si::sysinit:/etc/init.d/rcS
~~:S:wait:/sbin/sulogin --force
l0:0:wait:/etc/init.d/rc 0
l1:1:wait:/etc/init.d/rc 1
l2:2:wait:/etc/init.d/rc 2
l3:3:wait:/etc/init.d/rc 3
l4:4:wait:/etc/init.d/rc 4
l5:5:wait:/etc/init.d/rc 5
l6:6:wait:/etc/init.d/rc 6
z6:6:respawn:/sbin/sulogin --force
ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now
# `ctl stop` sends SIGPWR: halt cleanly.
pf::powerwait:/sbin/init 0
# A login prompt on the console only (`ctl console`).
1:2345:respawn:/sbin/getty --noclear 38400 console
";

/// `/etc/network/interfaces`: `eth0` by DHCP when it exists; `allow-hotplug` so a
/// container without networking does not wait for it.
pub const INTERFACES: &str = "\
# The loopback network interface.
auto lo
iface lo inet loopback

# eth0 by DHCP, when the container has one.
allow-hotplug eth0
iface eth0 inet dhcp

source /etc/network/interfaces.d/*
";

/// `/etc/hosts` of the image (each container gets its own from `hosts.tpl`).
const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
";

/// The image's templates (name, content), as Incus' Debian images have them.
pub const TEMPLATES: &[(&str, &str, &str)] = &[
    ("/etc/hostname", "hostname.tpl", "{{ container.name }}\n"),
    (
        "/etc/hosts",
        "hosts.tpl",
        "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n\
::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
    ),
];

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Remove what is inside `dir` (not `dir`); a missing `dir` is fine. Only our own build
/// tree is touched (no mounts are left in it, see [`unmount_under`]).
fn empty_dir(dir: &Path, keep: &[&str]) -> Result<(), ImageError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_at(dir))?;
        if keep.iter().any(|k| e.file_name() == **k) {
            continue;
        }
        let p = e.path();
        let is_dir = e.file_type().map_err(io_at(&p))?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&p).map_err(io_at(&p))?;
        } else {
            std::fs::remove_file(&p).map_err(io_at(&p))?;
        }
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

/// Make a debootstrapped `rootfs` a system container image (see the module docs).
pub fn customise(rootfs: &Path) -> Result<(), ImageError> {
    let write = |rel: &str, content: &str| {
        let p = rootfs.join(rel);
        std::fs::write(&p, content).map_err(io_at(&p))
    };
    write("etc/inittab", INITTAB)?;
    // sysvinit reads it after the inittab (and complains when it is missing).
    std::fs::create_dir_all(rootfs.join("etc/inittab.d"))
        .map_err(io_at(&rootfs.join("etc/inittab.d")))?;
    std::fs::create_dir_all(rootfs.join("etc/network/interfaces.d"))
        .map_err(io_at(&rootfs.join("etc/network")))?;
    write("etc/network/interfaces", INTERFACES)?;
    write("etc/default/locale", "LANG=C.UTF-8\n")?;
    write("etc/hosts", HOSTS)?;
    // debootstrap copies the host's: a container gets its own (templates, DHCP).
    remove_if_there(&rootfs.join("etc/hostname"))?;
    remove_if_there(&rootfs.join("etc/resolv.conf"))?;
    // Package caches and lists: apt fetches fresh ones (`apt update`).
    empty_dir(&rootfs.join("var/cache/apt/archives"), &["partial", "lock"])?;
    empty_dir(&rootfs.join("var/cache/apt/archives/partial"), &[])?;
    for e in std::fs::read_dir(rootfs.join("var/cache/apt"))
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if e.file_name().to_string_lossy().ends_with(".bin") {
            remove_if_there(&e.path())?;
        }
    }
    empty_dir(&rootfs.join("var/lib/apt/lists"), &["partial", "lock"])?;
    // The container gets a fresh /dev (tmpfs) from ctld; device nodes are not part of images.
    empty_dir(&rootfs.join("dev"), &[])?;
    Ok(())
}

// ----- the cache -----

/// Today in UTC as `YYYYMMDD`, and its midnight in unix seconds (the image's date).
fn today() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let date = now.date();
    let stamp = format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let midnight = date.midnight().assume_utc().unix_timestamp();
    (stamp, midnight)
}

/// The cache file of a debootstrap run: `debian-<suite>-<arch>-<YYYYMMDD>.tar.zst`.
pub fn cache_name(suite: Suite, arch: &str, date: &str) -> String {
    format!("debian-{}-{arch}-{date}.tar.zst", suite.codename)
}

/// A `Read` that reports how far through a file it is.
struct Counting<R> {
    inner: R,
    done: u64,
    total: u64,
    last: Option<u8>,
    progress: Progress,
    stage: &'static str,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = (self.done.min(self.total) * 100).checked_div(self.total) {
            let p = p as u8;
            if self.last != Some(p) {
                self.last = Some(p);
                self.progress.report(self.stage, Some(p));
            }
        }
        Ok(n)
    }
}

/// Unpack the cached debootstrap tarball `file` into `rootfs` (which must not exist).
fn unpack_cached(
    file: &Path,
    rootfs: &Path,
    progress: Progress,
    limits: &Limits,
) -> Result<(), ImageError> {
    let compression = Compression::detect_file(file)?;
    let f = std::fs::File::open(file).map_err(io_at(file))?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let counting = Counting {
        inner: io::BufReader::with_capacity(256 * 1024, f),
        done: 0,
        total,
        last: None,
        progress,
        stage: "unpacking",
    };
    let reader = compression.decoder(counting).map_err(io_at(file))?;
    unpack(reader, Layout::Unified, Some(rootfs), limits)?;
    Ok(())
}

/// Keep the debootstrapped `rootfs` as `cache/<name>`: written to a temporary name, synced,
/// renamed; older days of the same suite and architecture are removed.
fn store_in_cache(
    rootfs: &Path,
    cache: &Path,
    name: &str,
    prefix: &str,
    date: i64,
) -> Result<PathBuf, ImageError> {
    std::fs::create_dir_all(cache).map_err(io_at(cache))?;
    let tmp = cache.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&tmp).map_err(io_at(&tmp))?;
    let meta = ImageMetadata {
        architecture: host_architecture().to_string(),
        creation_date: date,
        properties: [("description".to_string(), format!("debootstrap {name}"))].into(),
        ..ImageMetadata::default()
    };
    let result =
        write_image_file(&tmp, &meta, &Tree::dir(rootfs), Compression::Zstd).and_then(|written| {
            let dest = cache.join(name);
            std::fs::rename(&written.file, &dest).map_err(io_at(&dest))?;
            Ok(dest)
        });
    let _ = std::fs::remove_dir_all(&tmp);
    let dest = result?;
    for e in std::fs::read_dir(cache)
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(prefix) && n.ends_with(".tar.zst") && n != name {
            tracing::info!(file = %e.path().display(), "removing an older debootstrap cache");
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(dest)
}

// ----- the build -----

/// A build directory under `$CTL_DIR/tmp`: when dropped armed, whatever is mounted below is
/// detached first, then it is removed (never across a mount).
struct BuildDir {
    path: PathBuf,
    armed: bool,
}

fn remove_build_dir(path: &Path) {
    let left = unmount_under(path);
    if left.is_empty() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        for (mount, error) in left {
            tracing::error!(mount = %mount.display(), error, "cannot detach; leaving the build dir");
        }
    }
}

impl BuildDir {
    /// Remove it now (and wait for it).
    async fn remove(mut self) {
        self.armed = false;
        let path = std::mem::take(&mut self.path);
        let _ = tokio::task::spawn_blocking(move || remove_build_dir(&path)).await;
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if self.armed {
            let path = std::mem::take(&mut self.path);
            std::thread::spawn(move || remove_build_dir(&path));
        }
    }
}

fn join_err(e: tokio::task::JoinError) -> ImageError {
    ImageError::Build(e.to_string())
}

/// The properties of a built image.
pub fn properties(suite: Suite, arch: &str, date: &str) -> BTreeMap<String, String> {
    [
        ("os", "Debian".to_string()),
        ("release", suite.codename.to_string()),
        ("version", suite.version.to_string()),
        ("architecture", arch.to_string()),
        ("serial", date.to_string()),
        ("variant", "default".to_string()),
        (
            "description",
            format!("Debian {} {arch} ({date})", suite.codename),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl ImageStore {
    /// Make sure the image of `suite` exists (built, or from the build cache); returns its
    /// fingerprint.
    pub(super) async fn ensure_debian(
        &self,
        suite: Suite,
        progress: &Progress,
    ) -> Result<String, ImageError> {
        let _building = self.debian_lock.lock().await;
        for alias in suite.aliases() {
            if let Some((fp, _)) = db::images::resolve_alias(&self.db, &alias).await? {
                return Ok(fp);
            }
        }
        let path = self
            .paths
            .tmp()
            .join(format!("debian-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(io_at(&path))?;
        let work = BuildDir { path, armed: true };
        let started = std::time::Instant::now();
        match self.build_debian(suite, &work.path, progress).await {
            Ok((fp, metadata, size)) => {
                let fp = self.store_debian(work, &fp, &metadata, size, suite).await?;
                tracing::info!(fingerprint = %fp, suite = suite.codename, seconds = started.elapsed().as_secs(), "built Debian image");
                Ok(fp)
            }
            Err(e) => {
                tracing::warn!(suite = suite.codename, error = %e, "Debian build failed");
                work.remove().await;
                Err(e)
            }
        }
    }

    /// Build in `work`: `work/rootfs`, `work/templates`, `work/image.tar.zst`.
    async fn build_debian(
        &self,
        suite: Suite,
        work: &Path,
        progress: &Progress,
    ) -> Result<(String, ImageMetadata, i64), ImageError> {
        let arch = debian_arch()?;
        let (date, midnight) = today();
        let name = cache_name(suite, arch, &date);
        let cache = self.paths.build_cache.join(&name);
        if tokio::fs::metadata(&cache).await.is_ok() {
            tracing::info!(cache = %cache.display(), "using the cached debootstrap");
        } else {
            progress.report("resolving mirror", None);
            let mirror = match &self.paths.debian_mirror {
                Some(m) => m.clone(),
                None => {
                    let apt = self.paths.apt_dir.clone();
                    tokio::task::spawn_blocking(move || host_mirror(&apt))
                        .await
                        .map_err(join_err)??
                }
            };
            tracing::info!(mirror, suite = suite.codename, arch, "running debootstrap");
            let target = work.join("debootstrap");
            let ran = debootstrap(suite, arch, &mirror, &target, progress).await;
            let left = {
                let target = target.clone();
                tokio::task::spawn_blocking(move || unmount_under(&target))
                    .await
                    .map_err(join_err)?
            };
            ran?;
            if !left.is_empty() {
                return Err(ImageError::Build(format!(
                    "debootstrap left mounts that cannot be detached: {left:?}"
                )));
            }
            progress.report("caching debootstrap result", None);
            let (cache_dir, n) = (self.paths.build_cache.clone(), name.clone());
            let prefix = format!("debian-{}-{arch}-", suite.codename);
            let t = target.clone();
            tokio::task::spawn_blocking(move || {
                let stored = store_in_cache(&t, &cache_dir, &n, &prefix, midnight);
                let _ = std::fs::remove_dir_all(&t);
                stored
            })
            .await
            .map_err(join_err)??;
        }
        progress.report("unpacking", Some(0));
        let rootfs = work.join("rootfs");
        {
            let (c, r, p, l) = (cache.clone(), rootfs.clone(), progress.clone(), self.limits);
            tokio::task::spawn_blocking(move || unpack_cached(&c, &r, p, &l))
                .await
                .map_err(join_err)??;
        }
        progress.report("customising", None);
        let mut metadata = ImageMetadata {
            architecture: host_architecture().to_string(),
            creation_date: midnight,
            properties: properties(suite, arch, &date),
            ..ImageMetadata::default()
        };
        let mut files = Vec::new();
        for (target, template, content) in TEMPLATES {
            metadata.templates.insert(
                (*target).to_string(),
                TemplateEntry {
                    when: vec!["create".into(), "copy".into()],
                    template: (*template).to_string(),
                    ..TemplateEntry::default()
                },
            );
            files.push(((*template).to_string(), content.as_bytes().to_vec()));
        }
        let (w, meta) = (work.to_path_buf(), metadata.clone());
        let r = rootfs.clone();
        tokio::task::spawn_blocking(move || {
            customise(&r)?;
            super::templates::store(&w, &meta.templates, &files)
        })
        .await
        .map_err(join_err)??;
        progress.report("packing image", None);
        let (w, meta) = (work.to_path_buf(), metadata.clone());
        let written = tokio::task::spawn_blocking(move || {
            let tree = Tree::dir(w.join("rootfs")).with_templates(w.join("templates"));
            write_image_file(&w, &meta, &tree, Compression::Zstd)
        })
        .await
        .map_err(join_err)??;
        Ok((written.fingerprint, metadata, written.size))
    }

    /// Move a built image into the store (unless that image is there already) and point the
    /// suite's aliases at it.
    async fn store_debian(
        &self,
        work: BuildDir,
        fp: &str,
        metadata: &ImageMetadata,
        size: i64,
        suite: Suite,
    ) -> Result<String, ImageError> {
        let _guard = self.build_lock.lock().await;
        let stored = db::images::find_prefix(&self.db, fp)
            .await?
            .iter()
            .any(|r| r.fingerprint == fp);
        if stored {
            work.remove().await;
        } else {
            let final_dir = self.move_in(&work.path, fp).await?;
            let mut work = work;
            work.armed = false;
            let props = &metadata.properties;
            let created = time::OffsetDateTime::from_unix_timestamp(metadata.creation_date)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(super::now);
            let recorded = self
                .record(
                    &db::NewImage {
                        fingerprint: fp,
                        filename: "",
                        size,
                        architecture: &metadata.architecture,
                        created_at: &created,
                        properties: props,
                        public: false,
                        cached: true,
                    },
                    &[],
                    true,
                )
                .await;
            if let Err(e) = recorded {
                drop(BuildDir {
                    path: final_dir,
                    armed: true,
                });
                return Err(e.into());
            }
            self.events.image("image-created", fp);
        }
        for alias in suite.aliases() {
            db::images::set_alias(&self.db, &alias, fp, "").await?;
        }
        Ok(fp.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn aliases_name_suites() {
        assert_eq!(
            suite_for_alias("debian/bookworm").map(|s| s.version),
            Some("12")
        );
        assert_eq!(
            suite_for_alias("debian/12").map(|s| s.codename),
            Some("bookworm")
        );
        assert_eq!(
            suite_for_alias("debian/13").map(|s| s.codename),
            Some("trixie")
        );
        assert_eq!(
            suite_for_alias("debian/bullseye").map(|s| s.version),
            Some("11")
        );
        for bad in [
            "debian/nosuch",
            "debian/",
            "bookworm",
            "ubuntu/12",
            "debian/bookworm/x",
        ] {
            assert!(suite_for_alias(bad).is_none(), "{bad}");
        }
        let all = known_aliases();
        for a in ["debian/bookworm", "debian/12", "debian/trixie", "debian/11"] {
            assert!(all.iter().any(|x| x == a), "{a}");
        }
    }

    #[test]
    fn one_line_sources() {
        let text = "\
# the main archive
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian/ bookworm main contrib
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [ signed-by=/k.gpg ] http://other.example/debian bookworm-updates main
   # indented comment
deb http://third.example/apt cloud-sdk-bookworm main
broken
";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].uris, ["http://mirror.example/debian/"]);
        assert_eq!(s[0].suites, ["bookworm"]);
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[3].uris, ["http://other.example/debian"]);
        assert_eq!(
            main_archive(&s).as_deref(),
            Some("http://mirror.example/debian")
        );
        // Only security and updates entries: no main archive.
        assert_eq!(main_archive(&s[2..4]), None);
        // Third-party repositories are not Debian's archive.
        assert_eq!(main_archive(&s[4..]), None);
        // One that uses Debian's suite names loses to a `/debian` archive listed after it.
        let s = parse_one_line(
            "deb http://packages.example/php bookworm main\n\
             deb http://mirror.example/debian bookworm main\n",
        );
        assert_eq!(
            main_archive(&s).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn deb822_sources() {
        let text = "\
Types: deb
# http://snapshot.example/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

types: deb-src deb
uris: https://mirror.example/debian/
suites: bookworm bookworm-updates
components: main non-free-firmware
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----
";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 3);
        assert!(!s[1].enabled);
        assert_eq!(s[2].types, ["deb-src", "deb"]);
        assert_eq!(s[2].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            main_archive(&s).as_deref(),
            Some("https://mirror.example/debian")
        );
        assert_eq!(main_archive(&s[..2]), None);
    }

    #[test]
    fn host_mirror_reads_every_file_in_order() -> TestResult {
        let apt = tempfile::tempdir()?;
        assert!(host_mirror(apt.path()).is_err());
        std::fs::create_dir(apt.path().join("sources.list.d"))?;
        std::fs::write(
            apt.path().join("sources.list.d/a.sources"),
            "Types: deb\nURIs: http://sec.example/debian-security\nSuites: trixie-security\nComponents: main\n",
        )?;
        std::fs::write(
            apt.path().join("sources.list.d/b.list.disabled"),
            "deb http://wrong.example/debian bookworm main\n",
        )?;
        std::fs::write(
            apt.path().join("sources.list.d/c.list"),
            "deb http://right.example/debian trixie main\n",
        )?;
        assert_eq!(host_mirror(apt.path())?, "http://right.example/debian");
        std::fs::write(apt.path().join("sources.list"), "# nothing\n")?;
        assert_eq!(host_mirror(apt.path())?, "http://right.example/debian");
        Ok(())
    }

    #[test]
    fn mirror_urls_are_checked() {
        assert!(check_mirror("http://m.example/debian").is_ok());
        assert!(check_mirror("file:/srv/mirror").is_ok());
        for bad in ["", "m.example/debian", "http://", "http://a b", "ssh://x"] {
            assert!(check_mirror(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debootstrap_progress_and_errors() {
        let mut log = DebootstrapLog::default();
        assert_eq!(
            log.line("P: 0 100 DOWNREL"),
            Some(("debootstrap: reading package lists", 0))
        );
        assert_eq!(log.line("PA: x"), None);
        assert_eq!(
            log.line("P: 0 40187620 DOWNDEBS"),
            Some(("debootstrap: retrieving packages", 0))
        );
        assert_eq!(
            log.line("P: 20093810 40187620"),
            Some(("debootstrap: retrieving packages", 50))
        );
        // Out of order (parallel downloads) or the same: nothing new.
        assert_eq!(log.line("P: 100 40187620"), None);
        assert_eq!(log.line("P: 20093810 40187620"), None);
        assert_eq!(
            log.line("P: 3 88 EXTRACTPKGS"),
            Some(("debootstrap: extracting packages", 3))
        );
        assert_eq!(log.line("Setting up base-files (12.4) ..."), None);
        assert_eq!(log.failure(&[]), "Setting up base-files (12.4) ...");
        log.line("E: NOTFOUND");
        log.line("EA: nosuch");
        log.line("EF: No such script: %s");
        assert_eq!(log.failure(&["stderr".into()]), "No such script: nosuch");
        assert_eq!(
            printf("%s of %d (100%%)", &["a".into(), "b".into()]),
            "a of b (100%)"
        );
    }

    #[test]
    fn customise_makes_a_container_image() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let r = tmp.path();
        for d in [
            "etc/default",
            "etc/network",
            "var/cache/apt/archives/partial",
            "var/lib/apt/lists/partial",
            "dev/pts",
        ] {
            std::fs::create_dir_all(r.join(d))?;
        }
        for f in [
            "etc/hostname",
            "etc/resolv.conf",
            "var/cache/apt/archives/x.deb",
            "var/cache/apt/pkgcache.bin",
            "var/lib/apt/lists/deb_dists_bookworm_InRelease",
            "dev/null",
        ] {
            std::fs::write(r.join(f), "x")?;
        }
        customise(r)?;
        let inittab = std::fs::read_to_string(r.join("etc/inittab"))?;
        assert!(inittab.contains("\npf::powerwait:/sbin/init 0\n"));
        assert!(inittab.contains(" console\n"));
        assert!(!inittab.contains("tty1"));
        let interfaces = std::fs::read_to_string(r.join("etc/network/interfaces"))?;
        assert!(interfaces.contains("allow-hotplug eth0\niface eth0 inet dhcp"));
        assert!(!interfaces.contains("auto eth0"));
        assert_eq!(
            std::fs::read_to_string(r.join("etc/default/locale"))?,
            "LANG=C.UTF-8\n"
        );
        for gone in [
            "etc/hostname",
            "etc/resolv.conf",
            "var/cache/apt/archives/x.deb",
            "var/cache/apt/pkgcache.bin",
            "var/lib/apt/lists/deb_dists_bookworm_InRelease",
            "dev/null",
            "dev/pts",
        ] {
            assert!(!r.join(gone).exists(), "{gone}");
        }
        assert!(r.join("var/lib/apt/lists/partial").is_dir());
        Ok(())
    }

    #[test]
    fn names_and_properties() {
        let bookworm = SUITES[1];
        assert_eq!(
            cache_name(bookworm, "amd64", "20260101"),
            "debian-bookworm-amd64-20260101.tar.zst"
        );
        let p = properties(bookworm, "amd64", "20260101");
        assert_eq!(p["os"], "Debian");
        assert_eq!(p["release"], "bookworm");
        assert_eq!(p["version"], "12");
        assert_eq!(p["variant"], "default");
        assert_eq!(p["description"], "Debian bookworm amd64 (20260101)");
        let (stamp, midnight) = today();
        assert_eq!(stamp.len(), 8);
        assert_eq!(midnight % 86_400, 0);
    }
}
