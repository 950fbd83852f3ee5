//! `ctl version`: the client's version and, when reachable, the server's.

use std::io::Write;

use super::Error;
use crate::Client;

/// This client's version.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Print both versions; an unreachable daemon is reported, not an error.
pub async fn run(client: &Client, out: &mut dyn Write) -> Result<(), Error> {
    writeln!(out, "Client version: {CLIENT_VERSION}")?;
    let server = match client.server().await {
        Ok(server) if server.environment.server_version.is_empty() => "unknown".to_string(),
        Ok(server) => server.environment.server_version,
        Err(_) => "unreachable".to_string(),
    };
    writeln!(out, "Server version: {server}")?;
    Ok(())
}
