//! `ctl config edit`: replace an instance's configuration with an edited YAML document.
//!
//! When stdin is not a terminal the document is read from it and sent once; on a terminal the
//! current document is opened in `$VISUAL`/`$EDITOR` (default `vi`) on a temp file, and when the
//! server (or the YAML parser) refuses the result the user may open the editor again on what
//! they wrote, as `incus config edit` does.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;

use tokio::io::AsyncReadExt;

use super::{ConfigDocument, parse_edited};
use crate::Client;
use crate::cmd::{Error, chain};

/// The editor used when neither `$VISUAL` nor `$EDITOR` is set.
pub const DEFAULT_EDITOR: &str = "vi";

/// Parse an edited document and send it with `PUT /1.0/instances/{name}`, waiting for the
/// operation.
pub async fn apply(client: &Client, name: &str, text: &str) -> Result<(), Error> {
    let body = parse_edited(text)?;
    client.replace_instance(name, &body).await?;
    Ok(())
}

/// Read the document from stdin and apply it once.
pub async fn from_stdin(client: &Client, name: &str) -> Result<(), Error> {
    let mut text = String::new();
    tokio::io::stdin()
        .read_to_string(&mut text)
        .await
        .map_err(|source| crate::Error::Io {
            what: "cannot read the config from stdin",
            source,
        })?;
    apply(client, name, &text).await
}

/// Open the instance's current document in the user's editor and apply the result, offering
/// to edit again while it is refused.
pub async fn interactive(client: &Client, name: &str) -> Result<(), Error> {
    let instance = client.instance(name).await?;
    let text = ConfigDocument::of(&instance, false).to_yaml()?;
    in_editor(text, async |text: &str| apply(client, name, text).await).await
}

/// Open `text` in the user's editor (`$VISUAL`, `$EDITOR`, else `vi`) on a temp file and
/// give the result to `apply`, offering to edit again while it is refused. Shared by every
/// `edit` command (instances, profiles).
pub async fn in_editor<P>(text: String, apply: P) -> Result<(), Error>
where
    P: AsyncFnMut(&str) -> Result<(), Error>,
{
    let file = tempfile::Builder::new()
        .prefix("ctl_editor_")
        .suffix(".yaml")
        .tempfile()
        .map_err(|source| crate::Error::Io {
            what: "cannot create a temp file for the editor",
            source,
        })?;
    let editor = editor_command(std::env::var_os("VISUAL"), std::env::var_os("EDITOR"));
    edit_until(
        text,
        |text| run_editor(&editor, file.path(), text),
        ask_again,
        apply,
    )
    .await
}

/// Edit `text` and apply it until the server accepts it. `edit` turns the current text into
/// the edited one; when the result is refused (bad YAML, or an error from the server),
/// `again` is told why and says whether to edit again (on the refused text, so nothing the
/// user wrote is lost) or give up with that error.
pub async fn edit_loop<E, A>(
    client: &Client,
    name: &str,
    text: String,
    edit: E,
    again: A,
) -> Result<(), Error>
where
    E: FnMut(&str) -> Result<String, Error>,
    A: FnMut(&Error) -> Result<bool, Error>,
{
    edit_until(text, edit, again, async |text: &str| {
        apply(client, name, text).await
    })
    .await
}

/// [`edit_loop`] with any `apply` (what sends the edited text).
pub async fn edit_until<E, A, P>(
    mut text: String,
    mut edit: E,
    mut again: A,
    mut apply: P,
) -> Result<(), Error>
where
    E: FnMut(&str) -> Result<String, Error>,
    A: FnMut(&Error) -> Result<bool, Error>,
    P: AsyncFnMut(&str) -> Result<(), Error>,
{
    loop {
        text = edit(&text)?;
        match apply(&text).await {
            Ok(()) => return Ok(()),
            Err(error) if is_refusal(&error) => {
                if !again(&error)? {
                    return Err(error);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether editing again could fix `error`: the document did not parse, or the server
/// refused it. Transport failures are not.
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Yaml(_) | Error::Client(crate::Error::Api { .. } | crate::Error::Operation { .. })
    )
}

/// The editor to run, as a program and its arguments: the first non-blank of `$VISUAL` and
/// `$EDITOR`, split on whitespace (`code --wait`), else [`DEFAULT_EDITOR`].
pub fn editor_command(visual: Option<OsString>, editor: Option<OsString>) -> Vec<String> {
    [visual, editor]
        .into_iter()
        .flatten()
        .map(|v| v.to_string_lossy().into_owned())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_EDITOR.to_string())
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Write `text` to `path`, run the editor on it in the foreground and read the result back.
fn run_editor(editor: &[String], path: &Path, text: &str) -> Result<String, Error> {
    let shown = editor.join(" ");
    let Some((program, args)) = editor.split_first() else {
        return Err(Error::Usage("no editor to run".into()));
    };
    let io = |what| move |source| Error::Client(crate::Error::Io { what, source });
    std::fs::write(path, text).map_err(io("cannot write the temp file for the editor"))?;
    let status = std::process::Command::new(program)
        .args(args)
        .arg(path)
        .status()
        .map_err(|source| Error::Editor {
            editor: shown.clone(),
            source,
        })?;
    if !status.success() {
        return Err(Error::EditorFailed {
            editor: shown,
            status,
        });
    }
    std::fs::read_to_string(path).map_err(io("cannot read the edited temp file"))
}

/// Tell the user why the document was refused and wait for enter (true) or end of input
/// (false); ctrl+c ends the process.
fn ask_again(error: &Error) -> Result<bool, Error> {
    let label = match error {
        Error::Yaml(_) => "Config parsing error",
        _ => "Error",
    };
    let mut stderr = std::io::stderr().lock();
    writeln!(stderr, "{label}: {}", chain(error))?;
    writeln!(
        stderr,
        "Press enter to open the editor again or ctrl+c to abort change"
    )?;
    stderr.flush()?;
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| crate::Error::Io {
            what: "cannot read from stdin",
            source,
        })?;
    Ok(read > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{async_envelope, read_request, sync_envelope, write_response};
    use serde_json::{Value, json};
    use tokio::net::UnixListener;

    #[test]
    fn editor_choice() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(editor_command(None, None), vec!["vi"]);
        assert_eq!(editor_command(os("nano"), os("vim")), vec!["nano"]);
        assert_eq!(editor_command(os("  "), os("vim")), vec!["vim"]);
        assert_eq!(
            editor_command(None, os("code --wait")),
            vec!["code", "--wait"]
        );
        assert_eq!(editor_command(os(""), os("")), vec!["vi"]);
    }

    #[test]
    fn refusals_are_retried_transport_failures_are_not() {
        let api = Error::Client(crate::Error::Api {
            code: 400,
            message: "no".into(),
        });
        assert!(is_refusal(&api));
        let yaml = parse_edited("config: [").err();
        assert!(yaml.as_ref().is_some_and(is_refusal));
        let unreachable = Error::Client(crate::Error::Protocol("x".into()));
        assert!(!is_refusal(&unreachable));
    }

    #[tokio::test]
    async fn refused_edit_is_edited_again_then_put() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let refusal = "\"raw.init\" cannot be changed while the instance is running";
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            // 1: the first PUT is refused.
            let (mut stream, _) = listener.accept().await.ok()?;
            seen.push(read_request(&mut stream).await);
            let envelope = json!({"type": "error", "status": "", "status_code": 0,
                                  "operation": "", "error_code": 400, "error": refusal,
                                  "metadata": null});
            write_response(&mut stream, "400 Bad Request", &envelope).await;
            // 2: the second is accepted with an operation...
            let (mut stream, _) = listener.accept().await.ok()?;
            seen.push(read_request(&mut stream).await);
            let op = json!({"id": "op-9", "class": "task", "description": "Updating instance",
                            "created_at": "", "updated_at": "", "status": "Running",
                            "status_code": 103, "resources": {}, "metadata": null,
                            "may_cancel": false, "err": "", "location": ""});
            write_response(&mut stream, "202 Accepted", &async_envelope(op.clone())).await;
            // 3: ...which the client waits for.
            let (mut stream, _) = listener.accept().await.ok()?;
            seen.push(read_request(&mut stream).await);
            let mut done = op;
            done["status"] = json!("Success");
            done["status_code"] = json!(200);
            write_response(&mut stream, "200 OK", &sync_envelope(done)).await;
            Some(seen)
        });

        let client = Client::from_dir(dir.path());
        let mut edits: Vec<String> = Vec::new();
        let mut refusals = Vec::new();
        let result = edit_loop(
            &client,
            "c1",
            "config:\n  raw.init: /sbin/init\n".into(),
            |text| {
                edits.push(text.to_string());
                Ok(if edits.len() == 1 {
                    text.replace("/sbin/init", "/bin/sh")
                } else {
                    text.replace("raw.init: /bin/sh", "user.a: 1")
                })
            },
            |error| {
                refusals.push(error.to_string());
                Ok(true)
            },
        )
        .await;
        let seen = server.await.ok().flatten().unwrap_or_default();

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(refusals, vec![refusal.to_string()]);
        // The second edit starts from what the user wrote the first time.
        assert_eq!(
            edits,
            vec![
                "config:\n  raw.init: /sbin/init\n".to_string(),
                "config:\n  raw.init: /bin/sh\n".to_string()
            ]
        );
        assert_eq!(seen.len(), 3);
        let bodies: Vec<Value> = seen
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap_or_default())
            .collect();
        assert!(seen[0].0.starts_with("PUT /1.0/instances/c1 HTTP/1.1\r\n"));
        assert_eq!(bodies[0], json!({"config": {"raw.init": "/bin/sh"}}));
        assert!(seen[1].0.starts_with("PUT /1.0/instances/c1 HTTP/1.1\r\n"));
        assert_eq!(bodies[1], json!({"config": {"user.a": "1"}}));
        assert!(
            seen[2]
                .0
                .starts_with("GET /1.0/operations/op-9/wait?timeout=-1 HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn bad_yaml_given_up_is_the_error_and_nothing_is_sent() {
        // No server at all: a request would fail with a connect error instead.
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let client = Client::from_dir(dir.path());
        let mut asked = 0;
        let result = edit_loop(
            &client,
            "c1",
            String::new(),
            |_| Ok("config: [\n".to_string()),
            |_| {
                asked += 1;
                Ok(false)
            },
        )
        .await;
        assert_eq!(asked, 1);
        assert!(matches!(result, Err(Error::Yaml(_))), "{result:?}");
    }
}
