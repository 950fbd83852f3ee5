//! Tidy tests: cheap text checks that keep the docs and the architecture honest.
//!
//! - `docs/openapi.json` lists exactly the routes and methods of `router()` in
//!   `daemon/src/api/mod.rs`, and its references and path parameters resolve;
//! - every module of `api`, `daemon` and `client` starts with a `//!` doc comment;
//! - the architecture's import boundaries hold: SQL only in `daemon/src/db/`,
//!   `unsafe` only in `daemon/src/worker/sys.rs`, namespace and mount syscalls only in
//!   `daemon/src/worker/`, no runtime dependencies in `ctl-api`, no `ctld` in the client.
//!
//! They read the sources as text from the workspace root (no workspace crate is compiled into
//! them) and run without privileges. Each rule is one test whose failure lists every
//! violation. The boundary rules skip comments and the insides of string literals, so docs
//! and messages may name what they forbid.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The crates whose sources the module and boundary rules cover.
const SOURCE_DIRS: &[&str] = &["api/src", "daemon/src", "client/src"];

/// Methods an OpenAPI path item can hold; other keys (`parameters`, `summary`...) are not
/// operations.
const OPENAPI_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Axum method-router constructors tidy understands, as they name HTTP methods.
const AXUM_METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `.rs` file under `dirs` (relative to the workspace root), as (relative path with
/// `/` separators, contents), sorted by path.
fn rust_files(dirs: &[&str]) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in dirs {
        let mut paths = Vec::new();
        walk(&root.join(dir), &mut paths);
        assert!(
            !paths.is_empty(),
            "no .rs files under {dir}: tidy is looking in the wrong place"
        );
        for path in paths {
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            files.push((rel, text));
        }
    }
    files.sort();
    files
}

/// Fail with every violation, one per line.
fn assert_none(rule: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{rule}: {} violation(s):\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
}

// ------------------------------------------------------------------ a tiny Rust lexer

/// `src` with comments replaced by spaces (newlines kept, so offsets and line numbers
/// survive). String, raw string and char literals are kept as they are.
fn strip_comments(src: &str) -> String {
    blank_non_code(src, false)
}

/// `src` with comments and the insides of string and char literals replaced by spaces: what
/// the boundary rules search, so messages and docs may name what they forbid.
fn code_only(src: &str) -> String {
    blank_non_code(src, true)
}

fn blank_non_code(src: &str, strings_too: bool) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                let start = i;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i.min(b.len()));
            }
            _ => match skip_literal(src, i) {
                Some(end) => {
                    if strings_too {
                        let quotes = ['"', '\''];
                        let open = src[i..end].find(quotes).map_or(i, |o| i + o);
                        let close = src[i..end].rfind(quotes).map_or(end, |o| i + o);
                        blank(&mut out, open + 1, close.max(open + 1));
                    }
                    i = end;
                }
                None => i += 1,
            },
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| panic!("stripping comments broke UTF-8: {e}"))
}

/// If a string, raw string or char literal starts at byte `i` of `code`, the index just
/// after it.
fn skip_literal(code: &str, i: usize) -> Option<usize> {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    match b[i] {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
            Some(b.len())
        }
        // r"..", r#".."# and br"..": an `r` that does not end an identifier (other than `b`).
        b'r' if i == 0
            || !is_ident(b[i - 1])
            || (b[i - 1] == b'b' && (i == 1 || !is_ident(b[i - 2]))) =>
        {
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                return None;
            }
            let closing = format!("\"{}", "#".repeat(j - i - 1));
            Some(
                code[j + 1..]
                    .find(&closing)
                    .map_or(b.len(), |n| j + 1 + n + closing.len()),
            )
        }
        // 'x' and '\n' are chars; 'a (a lifetime or a label) is not.
        b'\'' => {
            if b.get(i + 1) == Some(&b'\\') {
                let close = code.get(i + 3..)?.find('\'')?;
                Some(i + 3 + close + 1)
            } else {
                let ch = code[i + 1..].chars().next()?;
                let after = i + 1 + ch.len_utf8();
                (b.get(after) == Some(&b'\'')).then_some(after + 1)
            }
        }
        _ => None,
    }
}

/// Index of the bracket closing the one opened at `open_at` (`(`, `[` or `{`), skipping
/// literals. `code` must already be comment-free.
fn matching_close(code: &str, open_at: usize) -> Option<usize> {
    let b = code.as_bytes();
    let (open, close) = match b[open_at] {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        b'{' => (b'{', b'}'),
        _ => return None,
    };
    let mut depth = 0usize;
    let mut i = open_at;
    while i < b.len() {
        if let Some(next) = skip_literal(code, i) {
            i = next;
            continue;
        }
        if b[i] == open {
            depth += 1;
        } else if b[i] == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// The first `"..."` literal in `code`, unescaped only trivially (route strings have no
/// escapes).
fn first_string(code: &str) -> Option<String> {
    let start = code.find('"')?;
    let len = code[start + 1..].find('"')?;
    Some(code[start + 1..start + 1 + len].to_string())
}

/// Identifiers in `code` directly followed by `(` (a call), in order.
fn called_idents(code: &str) -> Vec<&str> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip_literal(code, i) {
            i = next;
            continue;
        }
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&b'(') {
                out.push(&code[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Every match of `needle` in the comment-free `code` as `path:line: the line`.
fn find_all(path: &str, original: &str, code: &str, needle: &str) -> Vec<String> {
    code.match_indices(needle)
        .map(|(at, _)| {
            let line = line_of(code, at);
            let text = original.lines().nth(line - 1).unwrap_or("").trim();
            format!("{path}:{line}: `{needle}` in `{text}`")
        })
        .collect()
}

// ------------------------------------------------------------------ router vs openapi.json

/// Routes of `router()` in `daemon/src/api/mod.rs`: path (OpenAPI style) → methods
/// (lowercase). Constructs tidy cannot follow are reported in `problems`.
fn router_routes(problems: &mut Vec<String>) -> BTreeMap<String, BTreeSet<String>> {
    const FILE: &str = "daemon/src/api/mod.rs";
    let code = strip_comments(&read(FILE));
    let Some(fn_at) = code.find("fn router(") else {
        problems.push(format!("{FILE}: no `fn router(` found"));
        return BTreeMap::new();
    };
    let Some(body) = code[fn_at..]
        .find('{')
        .map(|o| fn_at + o)
        .and_then(|open| Some((open, matching_close(&code, open)?)))
        .map(|(open, close)| &code[open..=close])
    else {
        problems.push(format!("{FILE}: cannot find the body of `fn router`"));
        return BTreeMap::new();
    };
    for unsupported in [".nest(", ".nest_service(", ".merge(", ".route_service("] {
        if body.contains(unsupported) {
            problems.push(format!(
                "{FILE}: router uses `{unsupported}`, which tidy does not follow: extend \
                 tests/tests/tidy.rs"
            ));
        }
    }
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (at, _) in body.match_indices(".route(") {
        let open = at + ".route".len();
        let Some(close) = matching_close(body, open) else {
            problems.push(format!(
                "{FILE}: unbalanced `.route(` at byte {at} of router()"
            ));
            continue;
        };
        let args = &body[open + 1..close];
        let Some(path) = first_string(args) else {
            problems.push(format!("{FILE}: `.route(` without a path literal: {args}"));
            continue;
        };
        let after_path = &args[args.find('"').map_or(0, |s| s + path.len() + 2)..];
        let calls = called_idents(after_path);
        if calls
            .iter()
            .any(|c| matches!(*c, "any" | "on" | "any_service" | "on_service"))
        {
            problems.push(format!(
                "{FILE}: route \"{path}\" uses `any`/`on`: tidy cannot tell its methods"
            ));
        }
        let methods: BTreeSet<String> = calls
            .into_iter()
            .filter(|c| AXUM_METHODS.contains(c))
            .map(str::to_string)
            .collect();
        if methods.is_empty() {
            problems.push(format!(
                "{FILE}: route \"{path}\": no method found in `{}`",
                args.trim()
            ));
        }
        let path = path.replace("{*", "{");
        if routes.insert(path.clone(), methods).is_some() {
            problems.push(format!("{FILE}: route \"{path}\" registered twice"));
        }
    }
    if routes.is_empty() {
        problems.push(format!("{FILE}: no `.route(` found in router()"));
    }
    routes
}

fn openapi() -> Value {
    serde_json::from_str(&read("docs/openapi.json"))
        .unwrap_or_else(|e| panic!("docs/openapi.json is not valid JSON: {e}"))
}

/// Path → methods of `docs/openapi.json`.
fn openapi_routes(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("docs/openapi.json has no `paths` object"));
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| OPENAPI_METHODS.contains(&k.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (path.clone(), methods)
        })
        .collect()
}

#[test]
fn openapi_paths_and_methods_match_router() {
    let mut violations = Vec::new();
    let router = router_routes(&mut violations);
    let spec = openapi_routes(&openapi());
    for (path, methods) in &router {
        match spec.get(path) {
            None => violations.push(format!(
                "route \"{path}\" ({}) is missing from docs/openapi.json",
                methods.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(documented) if documented != methods => violations.push(format!(
                "route \"{path}\": router has methods {methods:?}, docs/openapi.json has {documented:?}"
            )),
            Some(_) => {}
        }
    }
    for path in spec.keys() {
        if !router.contains_key(path) {
            violations.push(format!(
                "docs/openapi.json documents \"{path}\", which router() does not serve"
            ));
        }
    }
    assert_none("openapi.json vs router()", &violations);
}

/// Follow a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

#[test]
fn openapi_refs_and_path_parameters_resolve() {
    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                o.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
    let doc = openapi();
    let mut violations = Vec::new();
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.0."))
    {
        violations.push(format!("`openapi` is {}, expected 3.0.x", doc["openapi"]));
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs.into_iter().collect::<BTreeSet<_>>() {
        if resolve(&doc, r).is_none() {
            violations.push(format!("$ref \"{r}\" does not resolve"));
        }
    }
    let mut operation_ids = BTreeSet::new();
    let empty = serde_json::Map::new();
    for (path, item) in doc["paths"].as_object().unwrap_or(&empty) {
        let in_path: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name))
            .collect();
        let names = |params: &Value| -> BTreeSet<String> {
            params
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => resolve(&doc, r),
                    None => Some(p),
                })
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        };
        let shared = names(&item["parameters"]);
        for method in OPENAPI_METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            let mut declared = shared.clone();
            declared.extend(names(&op["parameters"]));
            let wanted: BTreeSet<String> = in_path.iter().map(|s| s.to_string()).collect();
            if declared != wanted {
                violations.push(format!(
                    "{method} {path}: path parameters declared {declared:?}, path has {wanted:?}"
                ));
            }
            match op["operationId"].as_str() {
                Some(id) if !operation_ids.insert(id.to_string()) => violations.push(format!(
                    "{method} {path}: operationId \"{id}\" is not unique"
                )),
                Some(_) => {}
                None => violations.push(format!("{method} {path}: no operationId")),
            }
            let codes: Vec<&String> = op["responses"]
                .as_object()
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            if !codes
                .iter()
                .any(|c| c.starts_with('2') || c.starts_with('3') || c.as_str() == "101")
            {
                violations.push(format!("{method} {path}: no success response"));
            }
        }
    }
    assert_none("openapi.json consistency", &violations);
}

// ------------------------------------------------------------------ module docs

/// Whether `text` starts with a `//!` doc, allowing blank lines and `#![...]` inner
/// attributes (also multi-line ones) before it.
fn starts_with_module_doc(text: &str) -> Result<(), String> {
    let mut lines = text.lines().map(str::trim);
    let mut in_attribute = false;
    for line in lines.by_ref() {
        if in_attribute {
            in_attribute = !line.ends_with(']');
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with("#![") {
            in_attribute = !line.ends_with(']');
            continue;
        }
        return if line.starts_with("//!") {
            Ok(())
        } else {
            Err(format!("starts with `{line}`"))
        };
    }
    Err("has no `//!` module doc".into())
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let violations: Vec<String> = rust_files(SOURCE_DIRS)
        .iter()
        .filter_map(|(path, text)| {
            starts_with_module_doc(text)
                .err()
                .map(|why| format!("{path}: {why}, not a `//!` module doc"))
        })
        .collect();
    assert_none("module docs", &violations);
}

// ------------------------------------------------------------------ import boundaries

#[test]
fn sql_stays_in_db() {
    let mut violations = Vec::new();
    for (path, text) in rust_files(&["daemon/src"]) {
        if path.starts_with("daemon/src/db/") {
            continue;
        }
        violations.extend(find_all(&path, &text, &code_only(&text), "sqlx"));
    }
    assert_none("no sqlx outside daemon/src/db/", &violations);
}

/// `unsafe` followed by `{`, `fn`, `impl`, `trait` or `extern` (the keyword, not a word in
/// an identifier), and lint escapes for `unsafe_code`.
fn unsafe_uses(path: &str, original: &str, code: &str) -> Vec<String> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("unsafe") {
        let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        let rest = code[at + "unsafe".len()..].trim_start();
        let word_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let keyword_use = code[at + "unsafe".len()..].starts_with(char::is_whitespace)
            && (rest.starts_with('{')
                || matches!(&rest[..word_end], "fn" | "impl" | "trait" | "extern"));
        if before_ok && keyword_use {
            let line = line_of(code, at);
            let text = original.lines().nth(line - 1).unwrap_or("").trim();
            out.push(format!("{path}:{line}: `{text}`"));
        }
    }
    for escape in ["allow(unsafe_code)", "expect(unsafe_code)"] {
        out.extend(find_all(path, original, code, escape));
    }
    out.sort_by_key(|v| v.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()));
    out
}

#[test]
fn unsafe_only_in_worker_sys() {
    let mut violations = Vec::new();
    for (path, text) in rust_files(SOURCE_DIRS) {
        if path == "daemon/src/worker/sys.rs" {
            continue;
        }
        violations.extend(unsafe_uses(&path, &text, &code_only(&text)));
    }
    assert_none("no unsafe outside daemon/src/worker/sys.rs", &violations);
}

#[test]
fn kernel_calls_stay_in_worker() {
    const FORBIDDEN: &[&str] = &["nix::mount", "nix::sched", "pivot_root", "libc::syscall"];
    let mut violations = Vec::new();
    for (path, text) in rust_files(SOURCE_DIRS) {
        if path.starts_with("daemon/src/worker/") {
            continue;
        }
        let code = code_only(&text);
        for needle in FORBIDDEN {
            violations.extend(find_all(&path, &text, &code, needle));
        }
        // `use nix::{mount, sched::...}` names the modules without `nix::mount`.
        for (at, _) in code.match_indices("nix::{") {
            let open = at + "nix::".len();
            let group =
                matching_close(&code, open).map_or(&code[open..], |close| &code[open..close]);
            let words: BTreeSet<&str> = group
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .collect();
            for module in ["mount", "sched"] {
                if words.contains(module) {
                    let line = line_of(&code, at);
                    violations.push(format!("{path}:{line}: `nix::{{.. {module} ..}}` import"));
                }
            }
        }
    }
    assert_none(
        "no namespace/mount syscalls outside daemon/src/worker/",
        &violations,
    );
}

/// Dependencies in a `Cargo.toml`, every table (`[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]`, `[target.'..'.dependencies]`, `[dependencies.name]`): for each,
/// (table, dependency key, `package` rename or the key, the line).
fn cargo_dependencies(manifest: &str) -> Vec<(String, String, String, String)> {
    let is_dep_table = |t: &str| {
        ["dependencies", "dev-dependencies", "build-dependencies"]
            .iter()
            .any(|d| t == *d || t.ends_with(&format!(".{d}")))
    };
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_string();
    let package_of = |line: &str| {
        line.split_once("package")
            .and_then(|(_, rest)| rest.trim_start().strip_prefix('='))
            .and_then(|rest| rest.trim_start().strip_prefix('"'))
            .and_then(|rest| rest.split_once('"'))
            .map(|(name, _)| name.to_string())
    };
    let mut deps = Vec::new();
    let mut table = String::new();
    // In `[dependencies.name]`, the dependency the table is about.
    let mut single: Option<usize> = None;
    for line in manifest.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = header.trim().to_string();
            single = None;
            if let Some((parent, name)) = table.rsplit_once('.')
                && is_dep_table(parent)
            {
                let name = unquote(name);
                deps.push((table.clone(), name.clone(), name, line.to_string()));
                single = Some(deps.len() - 1);
            }
            continue;
        }
        if let Some(i) = single {
            if line.starts_with("package")
                && let Some(p) = package_of(line)
            {
                deps[i].2 = p;
            }
            deps[i].3.push_str(&format!(" {line}"));
            continue;
        }
        if is_dep_table(&table)
            && let Some((key, _)) = line.split_once('=')
        {
            let key = unquote(key);
            let package = package_of(line).unwrap_or_else(|| key.clone());
            deps.push((table.clone(), key, package, line.to_string()));
        }
    }
    deps
}

#[test]
fn api_crate_has_no_runtime_dependencies() {
    const FORBIDDEN: &[&str] = &["tokio", "sqlx", "nix", "axum"];
    let manifest = read("api/Cargo.toml");
    let violations: Vec<String> = cargo_dependencies(&manifest)
        .into_iter()
        .filter(|(_, key, package, _)| {
            FORBIDDEN
                .iter()
                .any(|f| key == f || package == f || package.starts_with(&format!("{f}-")))
        })
        .map(|(table, _, _, line)| format!("api/Cargo.toml [{table}]: `{line}`"))
        .collect();
    assert_none(
        "ctl-api is serde only (no tokio, sqlx, nix, axum)",
        &violations,
    );
}

#[test]
fn client_does_not_depend_on_daemon() {
    let manifest = read("client/Cargo.toml");
    let violations: Vec<String> = cargo_dependencies(&manifest)
        .into_iter()
        .filter(|(_, key, package, line)| {
            key == "ctld" || package == "ctld" || line.contains("\"../daemon")
        })
        .map(|(table, _, _, line)| format!("client/Cargo.toml [{table}]: `{line}`"))
        .collect();
    assert_none("the client never depends on ctld", &violations);
}

// ------------------------------------------------------------------ the checkers themselves

#[test]
fn tidy_helpers_see_what_they_should() {
    let code =
        strip_comments("let a = \"// not a comment\"; // gone\n/* x /* y */ z */ b('\"', 'x)");
    assert!(code.contains("\"// not a comment\""));
    assert!(!code.contains("gone") && !code.contains('z'));
    assert!(code.contains("b('\"', 'x)"));
    assert_eq!(
        code_only("f(\"a // b\", 'c', r#\"d\"#) // e"),
        "f(\"      \", ' ', r#\" \"#)     "
    );

    let src = r##"// unsafe { }
unsafe fn f() {}
let unsafe_name = 1;
pub unsafe impl X {}
let s = unsafe { 1 };
#[allow(unsafe_code)]
let m = "unsafe { quoted }"; let r = r#"unsafe fn"#; let c = '"'; /* unsafe { */
"##;
    let found = unsafe_uses("x.rs", src, &code_only(src));
    assert_eq!(
        found
            .iter()
            .map(|v| v.split(':').nth(1).unwrap_or(""))
            .collect::<Vec<_>>(),
        ["2", "4", "5", "6"],
        "{found:?}"
    );

    assert!(starts_with_module_doc("\n#![allow(x)]\n#![cfg(\n  y\n)]\n//! Doc.\n").is_ok());
    assert!(starts_with_module_doc("//! Doc.\n#![allow(unsafe_code)]\n").is_ok());
    assert!(starts_with_module_doc("/// Item doc.\nfn f() {}\n").is_err());
    assert!(starts_with_module_doc("").is_err());

    let deps = cargo_dependencies(
        "[package]\nname = \"x\"\n[dependencies]\nserde = { workspace = true }\n\
         rt = { package = \"tokio\", version = \"1\" }\n[dependencies.sqlx]\nversion = \"0.9\"\n\
         [target.'cfg(unix)'.dependencies]\nnix = \"0.32\"\n[dev-dependencies]\n\"axum\" = \"0.8\"\n",
    );
    let names: Vec<&str> = deps.iter().map(|(_, _, p, _)| p.as_str()).collect();
    assert_eq!(names, ["serde", "tokio", "sqlx", "nix", "axum"]);

    let routes = "x.route(\"/a/{*p}\", get(m::get_one).post(m::post))\n  .route(\"/b\", axum::routing::delete(h))";
    let calls = called_idents(routes);
    assert!(calls.contains(&"get") && calls.contains(&"post") && calls.contains(&"delete"));
    assert!(!calls.contains(&"get_one"));
}
