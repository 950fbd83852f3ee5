//! `ctl cluster`: clustering as `incus cluster` manages it (`/1.0/cluster`,
//! `/1.0/cluster/members`), with ctl's one addition: the PostgreSQL database that holds the
//! cluster's state, named when clustering is enabled and carried to new members inside
//! their join tokens.
//!
//! `enable NAME --database URL` makes a standalone server the first member; `add NAME` asks
//! a member for a join token ([`crate::token`]), which `join TOKEN` spends on the new
//! server; `list`, `show`, `remove`, `evacuate` and `restore` manage the members. Requests
//! that may answer with an operation (`PUT /1.0/cluster`, member removal, evacuation) are
//! waited for, with progress on a terminal.

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::{ClusterMember, ClusterMemberStatePost, ClusterMembersPost, ClusterPut};
use hyper::Method;
use serde_json::Value;

use super::Error;
use crate::Client;
use crate::client::encode_segment;
use crate::output::{Format, render};
use crate::token;

/// Asks the user a yes/no question (the whole prompt given); `Ok(true)` for yes.
pub type Ask<'a> = dyn FnMut(&str) -> std::io::Result<bool> + 'a;

/// `ctl cluster` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Make a standalone server the first member of a new cluster: [REMOTE:]NAME
    /// --database URL
    Enable(EnableArgs),
    /// Request a join token for a new member: [REMOTE:]NAME (prints the token for
    /// `ctl cluster join`)
    Add(AddArgs),
    /// Join a cluster with a token from `ctl cluster add`: [REMOTE:]TOKEN (the server that
    /// joins is REMOTE:, else the default remote; it must not be clustered yet)
    Join(JoinArgs),
    /// List the cluster members: [REMOTE:]
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a member as YAML: [REMOTE:]NAME
    Show {
        /// Member name
        name: String,
    },
    /// Remove a member from the cluster: [REMOTE:]NAME
    #[command(visible_alias = "rm", alias = "delete")]
    Remove(RemoveArgs),
    /// Move a member's instances to the other members and keep it empty: [REMOTE:]NAME
    #[command(visible_alias = "evac")]
    Evacuate(MemberStateArgs),
    /// Bring an evacuated member back into use, its instances with it: [REMOTE:]NAME
    Restore(MemberStateArgs),
}

/// Arguments of `ctl cluster enable`.
#[derive(Debug, Clone, Args)]
pub struct EnableArgs {
    /// This server's member name in the new cluster, as [REMOTE:]NAME
    pub name: String,
    /// The PostgreSQL database that holds the cluster's state:
    /// postgres://USER:PASSWORD@HOST[:PORT]/DB
    #[arg(long, value_name = "URL")]
    pub database: String,
}

/// Arguments of `ctl cluster add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The new member's name, as [REMOTE:]NAME
    pub name: String,
    /// Print the token alone
    #[arg(short, long)]
    pub quiet: bool,
}

/// Arguments of `ctl cluster join`.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The join token, as [REMOTE:]TOKEN
    pub token: String,
    /// Where the other members reach this server, IP[:PORT] (default: its
    /// core.https_address)
    #[arg(long, value_name = "IP[:PORT]")]
    pub address: Option<String>,
}

/// Arguments of `ctl cluster list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The server to ask, as REMOTE: (default: the default remote)
    #[arg(value_name = "REMOTE:")]
    pub remote: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `ctl cluster remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// Member name, as [REMOTE:]NAME
    pub name: String,
    /// Remove the member even if it is unreachable (a last resort; asks first)
    #[arg(short, long)]
    pub force: bool,
    /// Do not ask before removing with --force
    #[arg(long)]
    pub yes: bool,
}

/// Arguments of `ctl cluster evacuate` and `restore`.
#[derive(Debug, Clone, Args)]
pub struct MemberStateArgs {
    /// Member name, as [REMOTE:]NAME
    pub name: String,
    /// Do not ask for confirmation
    #[arg(long)]
    pub force: bool,
}

/// Columns of `cluster list`.
pub const LIST_HEADER: [&str; 6] = ["NAME", "URL", "ROLES", "ARCHITECTURE", "STATE", "MESSAGE"];

/// Run a cluster subcommand against `client`'s server. `ask` confirms on a terminal (none:
/// commands that would ask need `--force` or `--yes`); `tty` (stderr on a terminal) shows
/// the progress of long operations.
pub async fn run(
    client: &Client,
    command: &ClusterCommand,
    ask: Option<&mut Ask<'_>>,
    tty: Option<&mut dyn Write>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ClusterCommand::Enable(args) => {
            settle(
                client,
                Method::PUT,
                "/1.0/cluster",
                &enable_body(args)?,
                tty,
            )
            .await?;
            writeln!(out, "Clustering enabled")?;
        }
        ClusterCommand::Add(args) => {
            let token = add(client, &args.name).await?;
            if !args.quiet {
                writeln!(out, "Member {} join token:", args.name)?;
            }
            writeln!(out, "{}", token::encode_join(&token))?;
        }
        ClusterCommand::Join(args) => {
            let (name, body) = join_body(args)?;
            settle(client, Method::PUT, "/1.0/cluster", &body, tty).await?;
            writeln!(out, "Joined the cluster as member {name}")?;
        }
        ClusterCommand::List(args) => {
            let cluster: ctl_api::Cluster = client.get("/1.0/cluster").await?;
            if !cluster.enabled {
                return Err(Error::Usage("the server is not part of a cluster".into()));
            }
            let raw = client.get_value("/1.0/cluster/members?recursion=1").await?;
            let members: Vec<ClusterMember> =
                serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                    what: "cluster member list".into(),
                    source,
                })?;
            let rows = member_rows(&members, args.format);
            out.write_all(render(args.format, &LIST_HEADER, &rows, &raw)?.as_bytes())?;
        }
        ClusterCommand::Show { name } => {
            let member = client.get_value(&member_path(name)?).await?;
            out.write_all(render(Format::Yaml, &[], &[], &member)?.as_bytes())?;
        }
        ClusterCommand::Remove(args) => {
            let path = member_path(&args.name)?;
            if args.force && !args.yes {
                let confirmed = confirm(ask, &force_remove_question(&args.name), || {
                    format!(
                        "removing member {} with --force needs confirmation: add --yes (there \
                         is no terminal to ask on)",
                        args.name
                    )
                })?;
                if !confirmed {
                    return Err(Error::Usage(format!(
                        "removal of member {} not confirmed",
                        args.name
                    )));
                }
            }
            let path = if args.force {
                format!("{path}?force=1")
            } else {
                path
            };
            client.request_settled(Method::DELETE, &path, None).await?;
            writeln!(out, "Member {} removed", args.name)?;
        }
        ClusterCommand::Evacuate(args) => {
            change_state(client, args, "evacuate", ask, tty, out).await?;
        }
        ClusterCommand::Restore(args) => {
            change_state(client, args, "restore", ask, tty, out).await?;
        }
    }
    Ok(())
}

/// The `PUT /1.0/cluster` body that enables clustering.
pub fn enable_body(args: &EnableArgs) -> Result<Value, Error> {
    if args.name.is_empty() {
        return Err(Error::Usage("name this server's member".into()));
    }
    let database = args.database.trim();
    if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
        return Err(Error::Usage(format!(
            "--database takes a PostgreSQL URL (postgres://USER:PASSWORD@HOST[:PORT]/DB), got \
             \"{database}\""
        )));
    }
    let mut put = ClusterPut {
        database: database.to_string(),
        ..Default::default()
    };
    put.cluster.server_name = args.name.clone();
    put.cluster.enabled = true;
    to_body(&put)
}

/// The member name a join token is for, and the `PUT /1.0/cluster` body that joins with it.
pub fn join_body(args: &JoinArgs) -> Result<(String, Value), Error> {
    let text = args.token.trim();
    let token = token::decode_join(text)
        .map_err(|e| Error::Usage(format!("not a cluster join token: {e}")))?;
    let mut put = ClusterPut {
        cluster_token: text.to_string(),
        server_address: args.address.clone().unwrap_or_default(),
        ..Default::default()
    };
    put.cluster.server_name = token.server_name.clone();
    put.cluster.enabled = true;
    Ok((token.server_name, to_body(&put)?))
}

/// `POST /1.0/cluster/members`: the token operation's metadata as a join token.
pub async fn add(client: &Client, name: &str) -> Result<token::JoinToken, Error> {
    if name.is_empty() {
        return Err(Error::Usage("name the new member".into()));
    }
    let body = to_body(&ClusterMembersPost {
        server_name: name.to_string(),
    })?;
    let operation = client
        .request_operation(Method::POST, "/1.0/cluster/members", Some(&body))
        .await?;
    token::join_from_operation(&operation.metadata)
        .map_err(|e| Error::Usage(format!("the server made no usable join token: {e}")))
}

/// One row per member, sorted by name; roles one a line (comma-separated in CSV), the
/// status in capitals.
pub fn member_rows(members: &[ClusterMember], format: Format) -> Vec<Vec<String>> {
    let separator = if format == Format::Csv { "," } else { "\n" };
    let mut sorted: Vec<&ClusterMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.server_name.cmp(&b.server_name));
    sorted
        .into_iter()
        .map(|m| {
            vec![
                m.server_name.clone(),
                m.url.clone(),
                m.put.roles.join(separator),
                m.architecture.clone(),
                m.status.to_uppercase(),
                m.message.clone(),
            ]
        })
        .collect()
}

/// `POST /1.0/cluster/members/NAME/state` with `action` (`evacuate` or `restore`), after
/// asking unless `--force`; waits for the operation.
async fn change_state(
    client: &Client,
    args: &MemberStateArgs,
    action: &str,
    ask: Option<&mut Ask<'_>>,
    tty: Option<&mut dyn Write>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let path = format!("{}/state", member_path(&args.name)?);
    let verb = if action == "restore" {
        "Restoring"
    } else {
        "Evacuating"
    };
    if !args.force {
        let question = format!(
            "Are you sure you want to {action} cluster member \"{}\"? (yes/no) [default=no]: ",
            args.name
        );
        let confirmed = confirm(ask, &question, || {
            format!(
                "{} member {} needs confirmation: add --force (there is no terminal to ask \
                 on)",
                verb.to_lowercase(),
                args.name
            )
        })?;
        if !confirmed {
            return Ok(());
        }
    }
    let body = to_body(&ClusterMemberStatePost {
        action: action.to_string(),
        mode: String::new(),
    })?;
    writeln!(out, "{verb} cluster member {}", args.name)?;
    out.flush()?;
    settle(client, Method::POST, &path, &body, tty).await
}

/// Send a request that may answer sync or with an operation, and wait for the operation
/// (its progress shown on `tty`).
async fn settle(
    client: &Client,
    method: Method,
    path: &str,
    body: &Value,
    tty: Option<&mut dyn Write>,
) -> Result<(), Error> {
    if let Some(operation) = client.request_started(method, path, Some(body)).await? {
        crate::progress::wait(client, &operation.id, tty).await?;
    }
    Ok(())
}

/// Ask `question`; without a terminal (`ask` is `None`) the command needs a flag instead,
/// which `refusal` names.
fn confirm(
    ask: Option<&mut Ask<'_>>,
    question: &str,
    refusal: impl FnOnce() -> String,
) -> Result<bool, Error> {
    match ask {
        Some(ask) => ask(question).map_err(|source| {
            Error::Client(crate::Error::Io {
                what: "cannot read the answer from stdin",
                source,
            })
        }),
        None => Err(Error::Usage(refusal())),
    }
}

/// What `remove --force` asks.
fn force_remove_question(name: &str) -> String {
    format!(
        "Removing a member with --force is a last resort. The member will not work \
         afterwards, and any instance, image or volume it still holds is lost to the \
         cluster; when the member is still up, move those elsewhere and remove it without \
         --force instead. Use --force only for a member that died, was reinstalled or will \
         never come back.\n\nAre you really sure you want to force removing {name}? \
         (yes/no): "
    )
}

/// Ask on the terminal: the question on stderr, `yes` (or `y`) read from stdin.
pub fn ask_on_terminal(question: &str) -> std::io::Result<bool> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{question}")?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `/1.0/cluster/members/NAME`; the name must not be empty.
fn member_path(name: &str) -> Result<String, Error> {
    if name.is_empty() {
        return Err(Error::Usage("name a cluster member".into()));
    }
    Ok(format!("/1.0/cluster/members/{}", encode_segment(name)))
}

fn to_body<T: serde::Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|source| {
        Error::Client(crate::Error::Decode {
            what: "request body".into(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        FakeServer, Seen, async_envelope, error_envelope, operation, sync_envelope,
    };
    use serde_json::json;

    fn parse(args: &[&str]) -> ClusterCommand {
        use clap::Parser;
        let argv = ["ctl", "cluster"].into_iter().chain(args.iter().copied());
        match crate::cli::Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::cli::Command::Cluster { command }) => command,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn join_token() -> token::JoinToken {
        token::JoinToken {
            server_name: "node2".into(),
            fingerprint: "cd".repeat(32),
            addresses: vec!["10.0.0.1:8443".into()],
            secret: "j01n".into(),
            expires_at: "2026-12-06T10:00:00Z".into(),
            database: "postgres://ctl:pw@10.0.0.9:5432/ctl".into(),
        }
    }

    fn member(name: &str, status: &str, roles: &[&str]) -> Value {
        json!({"server_name": name, "url": format!("https://{name}:8443"), "database": true,
               "status": status, "message": if status == "Offline" { "no heartbeat" } else { "" },
               "architecture": "x86_64", "roles": roles, "failure_domain": "default",
               "description": "", "config": {}, "groups": ["default"]})
    }

    /// Run `command` on `server` with no terminal; (result, output).
    async fn run_plain(
        server: &FakeServer,
        command: &ClusterCommand,
    ) -> (Result<(), Error>, String) {
        let mut out = Vec::new();
        let result = run(&server.client(), command, None, None, &mut out).await;
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn enable_puts_the_name_and_database_and_waits_for_an_operation() {
        let command = parse(&[
            "enable",
            "node1",
            "--database",
            "postgres://ctl:pw@db:5432/ctl",
        ]);
        let server = FakeServer::serve(vec![
            async_envelope(operation("op1", 103, "")),
            sync_envelope(operation("op1", 200, "")),
        ]);
        let (result, out) = run_plain(&server, &command).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Clustering enabled\n");
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("PUT", "/1.0/cluster")
        );
        let body = &seen[0].body;
        assert_eq!(body["server_name"], json!("node1"));
        assert_eq!(body["enabled"], json!(true));
        assert_eq!(body["database"], json!("postgres://ctl:pw@db:5432/ctl"));
        assert_eq!(body["cluster_token"], json!(""));
        let put: Result<ClusterPut, _> = serde_json::from_value(body.clone());
        assert!(put.is_ok(), "{put:?}");
        assert_eq!(seen[1].path, "/1.0/operations/op1/wait?timeout=-1");

        // A sync answer is done at once.
        let server = FakeServer::serve(vec![sync_envelope(json!({}))]);
        let (result, _) = run_plain(&server, &command).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(server.seen().len(), 1);
    }

    #[test]
    fn enable_needs_a_postgres_url() {
        assert!(parse_err(&["enable", "node1"]), "--database is required");
        let ClusterCommand::Enable(args) = parse(&["enable", "n", "--database", "/tmp/db"]) else {
            panic!("enable");
        };
        let err = enable_body(&args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("PostgreSQL URL"), "{err}");
        let ClusterCommand::Enable(args) =
            parse(&["enable", "n", "--database", "postgresql://u@h/d"])
        else {
            panic!("enable");
        };
        assert!(enable_body(&args).is_ok());
    }

    fn parse_err(args: &[&str]) -> bool {
        use clap::Parser;
        let argv = ["ctl", "cluster"].into_iter().chain(args.iter().copied());
        crate::cli::Cli::try_parse_from(argv).is_err()
    }

    #[test]
    fn join_sends_the_token_and_the_name_it_carries() {
        let text = token::encode_join(&join_token());
        let ClusterCommand::Join(args) = parse(&["join", &text, "--address", "10.0.0.2:8443"])
        else {
            panic!("join");
        };
        let joined = join_body(&args);
        let Ok((name, body)) = joined else {
            panic!("{joined:?}");
        };
        assert_eq!(name, "node2");
        assert_eq!(body["server_name"], json!("node2"));
        assert_eq!(body["enabled"], json!(true));
        assert_eq!(body["cluster_token"], json!(text));
        assert_eq!(body["server_address"], json!("10.0.0.2:8443"));
        assert_eq!(body["database"], json!(""));

        for bad in ["nonsense!", "aGVsbG8=", ""] {
            let args = JoinArgs {
                token: bad.into(),
                address: None,
            };
            let err = join_body(&args)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("not a cluster join token"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn join_waits_for_the_operation() {
        let text = token::encode_join(&join_token());
        let server = FakeServer::serve(vec![
            async_envelope(operation("j1", 103, "")),
            sync_envelope(operation("j1", 400, "secret mismatch")),
        ]);
        let (result, out) = run_plain(&server, &parse(&["join", &text])).await;
        assert_eq!(
            result.err().map(|e| e.to_string()),
            Some("secret mismatch".to_string())
        );
        assert_eq!(out, "");
        let seen = server.seen();
        assert_eq!(seen[0].method, "PUT");
        assert_eq!(seen[0].body["server_address"], json!(""));
    }

    #[tokio::test]
    async fn add_prints_the_token_of_the_operation() {
        let mut op = operation("tok1", 103, "");
        op["class"] = json!("token");
        op["metadata"] = serde_json::to_value(join_token()).unwrap_or_default();
        let server = FakeServer::serve(vec![async_envelope(op.clone()), async_envelope(op)]);
        let (result, out) = run_plain(&server, &parse(&["add", "node2"])).await;
        assert!(result.is_ok(), "{result:?}");
        let text = token::encode_join(&join_token());
        assert_eq!(out, format!("Member node2 join token:\n{text}\n"));
        let (result, out) = run_plain(&server, &parse(&["add", "node2", "--quiet"])).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, format!("{text}\n"));
        assert_eq!(
            server.seen()[0],
            Seen::new(
                "POST",
                "/1.0/cluster/members",
                json!({"server_name": "node2"})
            )
        );
    }

    #[tokio::test]
    async fn list_shows_members_as_csv_table_or_json() {
        let members = json!([
            member("node2", "Offline", &[]),
            member("node1", "Online", &["database-leader", "database"]),
        ]);
        let answers = |n: usize| {
            (0..n)
                .flat_map(|_| {
                    [
                        sync_envelope(json!({"server_name": "node1", "enabled": true,
                                             "member_config": []})),
                        sync_envelope(members.clone()),
                    ]
                })
                .collect::<Vec<_>>()
        };
        let server = FakeServer::serve(answers(2));
        let (result, out) = run_plain(&server, &parse(&["list", "--format", "csv"])).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            out,
            "NAME,URL,ROLES,ARCHITECTURE,STATE,MESSAGE\n\
             node1,https://node1:8443,\"database-leader,database\",x86_64,ONLINE,\n\
             node2,https://node2:8443,,x86_64,OFFLINE,no heartbeat\n"
        );
        let (result, out) = run_plain(&server, &parse(&["ls", "-f", "json"])).await;
        assert!(result.is_ok(), "{result:?}");
        let back: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(back, members);
        let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(
            paths[..2],
            ["/1.0/cluster", "/1.0/cluster/members?recursion=1"]
        );

        let decoded: Vec<ClusterMember> = serde_json::from_value(members).unwrap_or_default();
        let table = crate::output::render_table(
            &LIST_HEADER,
            &member_rows(&decoded, Format::Table),
            Some(120),
        );
        let expected = "\
+-------+--------------------+-----------------+--------------+---------+--------------+
| NAME  | URL                | ROLES           | ARCHITECTURE | STATE   | MESSAGE      |
+-------+--------------------+-----------------+--------------+---------+--------------+
| node1 | https://node1:8443 | database-leader | x86_64       | ONLINE  |              |
|       |                    | database        |              |         |              |
+-------+--------------------+-----------------+--------------+---------+--------------+
| node2 | https://node2:8443 |                 | x86_64       | OFFLINE | no heartbeat |
+-------+--------------------+-----------------+--------------+---------+--------------+
";
        assert_eq!(table, expected);
    }

    #[tokio::test]
    async fn list_on_a_standalone_server_says_so() {
        let server = FakeServer::serve(vec![sync_envelope(
            json!({"server_name": "", "enabled": false, "member_config": []}),
        )]);
        let (result, _) = run_plain(&server, &parse(&["list"])).await;
        assert_eq!(
            result.err().map(|e| e.to_string()),
            Some("the server is not part of a cluster".to_string())
        );
        assert_eq!(server.seen().len(), 1);
    }

    #[tokio::test]
    async fn show_is_the_member_as_yaml() {
        let server = FakeServer::serve(vec![sync_envelope(member("node1", "Online", &[]))]);
        let (result, out) = run_plain(&server, &parse(&["show", "node1"])).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(out.contains("server_name: node1\n"), "{out}");
        assert!(out.contains("status: Online\n"), "{out}");
        assert_eq!(server.seen()[0].path, "/1.0/cluster/members/node1");
    }

    #[tokio::test]
    async fn evacuate_asks_unless_forced_and_waits() {
        // No terminal, no --force: refused before any request.
        let server = FakeServer::serve(Vec::new());
        let (result, _) = run_plain(&server, &parse(&["evacuate", "node2"])).await;
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("add --force"), "{err}");
        // Answered no: nothing done.
        let mut asked = Vec::new();
        let mut no = |q: &str| {
            asked.push(q.to_string());
            Ok(false)
        };
        let mut out = Vec::new();
        let command = parse(&["evacuate", "node2"]);
        let result = run(&server.client(), &command, Some(&mut no), None, &mut out).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            asked,
            ["Are you sure you want to evacuate cluster member \"node2\"? (yes/no) [default=no]: "]
        );
        assert!(out.is_empty());
        assert!(server.seen().is_empty());

        // Answered yes: the state request, then the wait.
        let server = FakeServer::serve(vec![
            async_envelope(operation("ev1", 103, "")),
            sync_envelope(operation("ev1", 200, "")),
        ]);
        let mut yes = |_: &str| Ok(true);
        let mut out = Vec::new();
        let result = run(&server.client(), &command, Some(&mut yes), None, &mut out).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Evacuating cluster member node2\n"
        );
        let seen = server.seen();
        assert_eq!(
            seen[0],
            Seen::new(
                "POST",
                "/1.0/cluster/members/node2/state",
                json!({"action": "evacuate", "mode": ""})
            )
        );
        assert_eq!(seen[1].path, "/1.0/operations/ev1/wait?timeout=-1");

        // restore --force: no question.
        let server = FakeServer::serve(vec![
            async_envelope(operation("rs1", 103, "")),
            sync_envelope(operation("rs1", 200, "")),
        ]);
        let (result, out) = run_plain(&server, &parse(&["restore", "node2", "--force"])).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Restoring cluster member node2\n");
        assert_eq!(server.seen()[0].body["action"], json!("restore"));
    }

    #[tokio::test]
    async fn remove_asks_only_with_force() {
        let server = FakeServer::serve(vec![sync_envelope(json!({}))]);
        let (result, out) = run_plain(&server, &parse(&["remove", "node2"])).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Member node2 removed\n");
        assert_eq!(
            server.seen(),
            [Seen::new(
                "DELETE",
                "/1.0/cluster/members/node2",
                Value::Null
            )]
        );

        let server = FakeServer::serve(vec![error_envelope(500, "unexpected")]);
        let (result, _) = run_plain(&server, &parse(&["rm", "node2", "--force"])).await;
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("add --yes"), "{err}");
        let mut no = |_: &str| Ok(false);
        let command = parse(&["rm", "node2", "-f"]);
        let result = run(
            &server.client(),
            &command,
            Some(&mut no),
            None,
            &mut Vec::new(),
        )
        .await;
        assert!(result.is_err());
        assert!(server.seen().is_empty());

        let server = FakeServer::serve(vec![
            async_envelope(operation("rm1", 103, "")),
            sync_envelope(operation("rm1", 200, "")),
        ]);
        let (result, _) =
            run_plain(&server, &parse(&["remove", "node2", "--force", "--yes"])).await;
        assert!(result.is_ok(), "{result:?}");
        let seen = server.seen();
        assert_eq!(seen[0].path, "/1.0/cluster/members/node2?force=1");
        assert_eq!(seen[1].path, "/1.0/operations/rm1/wait?timeout=-1");
    }

    #[test]
    fn completion_knows_the_cluster_commands() {
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut crate::cli::Cli::command(),
            "ctl",
            &mut script,
        );
        let script = String::from_utf8_lossy(&script);
        for word in ["cluster", "evacuate", "--database", "--target"] {
            assert!(script.contains(word), "{word}");
        }
    }
}
