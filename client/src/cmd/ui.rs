//! `ctl ui [REMOTE:]`: a single-use login link for the server's web UI
//! (`POST /1.0/ui/login-links`), printed as one line so scripts can read it.

use std::io::Write;

use hyper::Method;
use serde_json::Value;

use super::Error;
use crate::Client;

/// Ask the server for a login link and print its URL.
pub async fn run(client: &Client, out: &mut dyn Write) -> Result<(), Error> {
    let url = login_link(client).await?;
    writeln!(out, "{url}")?;
    Ok(())
}

/// The URL of a fresh login link.
pub async fn login_link(client: &Client) -> Result<String, Error> {
    let answer = client
        .request(Method::POST, "/1.0/ui/login-links", None)
        .await?;
    answer
        .metadata
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Client(crate::Error::Protocol(
                "the login link answer has no url".into(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeServer, sync_envelope};
    use serde_json::json;

    #[tokio::test]
    async fn prints_the_link_url() {
        let url = "https://127.0.0.1:8443/ui/login?token=t0k";
        let server = FakeServer::serve(vec![
            sync_envelope(json!({"url": url, "token": "t0k", "expires_at": "x"})),
            sync_envelope(json!({})),
        ]);
        let client = server.client();
        let mut out = Vec::new();
        assert!(run(&client, &mut out).await.is_ok());
        assert_eq!(String::from_utf8_lossy(&out), format!("{url}\n"));
        assert!(run(&client, &mut Vec::new()).await.is_err());
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/1.0/ui/login-links")
        );
    }
}
