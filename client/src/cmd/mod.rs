//! The `ctl` commands, one module per command group. Each module owns its clap arguments and
//! a `run` function that drives the [`Client`](crate::Client) and writes to the given output.

pub mod backup;
pub mod cluster;
pub mod config;
pub mod console;
pub mod copy;
pub mod create;
pub mod delete;
pub mod device;
pub mod exec;
pub mod file;
pub mod image;
pub mod image_info;
pub mod image_transfer;
pub mod info;
pub mod list;
pub mod monitor;
pub mod network;
pub mod profile;
pub mod remote;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod top;
pub mod ui;
pub mod version;

use std::fmt::Write as _;

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::Error),
    #[error(transparent)]
    Output(#[from] crate::output::Error),
    #[error(transparent)]
    Remote(#[from] crate::remotes::RemoteError),
    /// A remote refused this client (its certificate is not trusted there, or no more).
    #[error("{}", not_authorized(remote, message))]
    NotAuthorized { remote: String, message: String },
    #[error("cannot write the output")]
    Stdout(#[source] std::io::Error),
    /// Several targets of one command failed; each with its name.
    #[error("{}", several(.0))]
    Several(Vec<(String, crate::Error)>),
    /// Arguments clap accepted but the command cannot use.
    #[error("{0}")]
    Usage(String),
    /// An edited instance config is not YAML of the expected shape.
    #[error("cannot parse the config")]
    Yaml(#[source] serde_yaml_ng::Error),
    /// The text editor could not be started.
    #[error("cannot run the editor {editor:?}")]
    Editor {
        editor: String,
        #[source]
        source: std::io::Error,
    },
    /// The text editor ended unsuccessfully.
    #[error("the editor {editor:?} failed ({status})")]
    EditorFailed {
        editor: String,
        status: std::process::ExitStatus,
    },
    /// A local file or directory could not be read or written.
    #[error("{}", path.display())]
    LocalFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Stdout(e)
    }
}

/// What a 403 from a remote means, and what to do about it.
fn not_authorized(remote: &str, message: &str) -> String {
    let detail = if message.is_empty() || message == "not authorized" {
        String::new()
    } else {
        format!(" ({message})")
    };
    format!(
        "not authorized by remote \"{remote}\"{detail}: its server no longer trusts this \
         client's certificate, or restricts what it may do. To join again, run `ctl config \
         trust add NAME` on the server, then `ctl remote remove {remote}` and `ctl remote add \
         {remote} TOKEN` here"
    )
}

/// One line naming every failed target: `c1: not found; c2: busy`.
fn several(failures: &[(String, crate::Error)]) -> String {
    let mut text = String::new();
    for (i, (name, error)) in failures.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(text, "{name}: {}", chain(error));
    }
    text
}

/// An error and its sources on one line, joined by `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The outcome of a command applied to several targets: with one target its error as it is,
/// with more every failure named.
fn collect(total: usize, mut failures: Vec<(String, crate::Error)>) -> Result<(), Error> {
    match failures.pop() {
        None => Ok(()),
        Some((_, error)) if total == 1 && failures.is_empty() => Err(Error::Client(error)),
        Some(last) => {
            failures.push(last);
            Err(Error::Several(failures))
        }
    }
}

/// Parse a `KEY=VALUE` argument (`--config`, `--env`); the key must not be empty.
pub fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("limits.memory=1GiB"),
            Ok(("limits.memory".into(), "1GiB".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(
            parse_key_value("empty="),
            Ok(("empty".into(), String::new()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn one_target_keeps_its_error_several_are_named() {
        let not_found = |name: &str| crate::Error::Api {
            code: 404,
            message: format!("instance {name:?} not found"),
        };
        let one = collect(1, vec![("c1".into(), not_found("c1"))]).err();
        assert_eq!(
            one.map(|e| e.to_string()),
            Some("instance \"c1\" not found".to_string())
        );
        let two = collect(
            3,
            vec![
                ("c1".into(), not_found("c1")),
                ("c3".into(), not_found("c3")),
            ],
        )
        .err();
        assert_eq!(
            two.map(|e| e.to_string()),
            Some("c1: instance \"c1\" not found; c3: instance \"c3\" not found".to_string())
        );
        assert!(collect(2, Vec::new()).is_ok());
    }
}
