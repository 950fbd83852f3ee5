//! Trust tokens ([`ctl_api::CertificateAddToken`], as Incus' own): what `ctl config trust add` prints and
//! `ctl remote add NAME TOKEN` reads. A token is the standard (padded) base64 of a JSON
//! object naming the new client, the server certificate's fingerprint, the server's
//! addresses and the one-time secret.
//!
//! Cluster join tokens ([`ctl_api::ClusterMemberJoinToken`]) are made the same way, as
//! Incus' `ClusterMemberJoinToken.String()` makes them: what `ctl cluster add NAME` prints
//! and `ctl cluster join TOKEN` reads (the new member's name, the issuing member's
//! fingerprint and addresses, the secret, the expiry, and ctl's database URL).

use base64::Engine as _;
use serde_json::Value;

pub use ctl_api::CertificateAddToken as AddToken;
pub use ctl_api::ClusterMemberJoinToken as JoinToken;

/// Why a string is not a usable token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not base64")]
    Base64,
    #[error("not a token: {0}")]
    Json(String),
    #[error("the token has no {0}")]
    Missing(&'static str),
    #[error("this is a trust token for `ctl remote add`")]
    TrustToken,
}

/// The token as printed: base64 of its JSON.
pub fn encode(token: &AddToken) -> String {
    let json = serde_json::to_vec(token).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Read a token (surrounding whitespace ignored). Every field but the expiry must be present
/// and not empty.
pub fn decode(text: &str) -> Result<AddToken, TokenError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| TokenError::Base64)?;
    let token: AddToken =
        serde_json::from_slice(&bytes).map_err(|e| TokenError::Json(e.to_string()))?;
    if token.client_name.is_empty() {
        return Err(TokenError::Missing("client name"));
    }
    if token.addresses.iter().all(String::is_empty) {
        return Err(TokenError::Missing("server address"));
    }
    if token.secret.is_empty() {
        return Err(TokenError::Missing("secret"));
    }
    if token.fingerprint.is_empty() {
        return Err(TokenError::Missing("certificate fingerprint"));
    }
    Ok(token)
}

/// The token a `POST /1.0/certificates` with `token: true` made: its operation's metadata
/// (`secret`, `fingerprint`, `addresses`, `request.name`, `expiresAt`).
pub fn from_operation(metadata: &Value, client_name: &str) -> Result<AddToken, TokenError> {
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).unwrap_or("");
    let name = metadata
        .pointer("/request/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(client_name);
    let addresses = metadata
        .get("addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let expires_at = [text("expiresAt"), text("expires_at")]
        .into_iter()
        .find(|t| !t.is_empty() && !t.starts_with("0001-"))
        .map(str::to_string);
    let token = AddToken {
        client_name: name.to_string(),
        fingerprint: text("fingerprint").to_string(),
        addresses,
        secret: text("secret").to_string(),
        expires_at,
    };
    // The same checks a reader makes.
    decode(&encode(&token))
}

/// A cluster join token as printed: base64 of its JSON.
pub fn encode_join(token: &JoinToken) -> String {
    let json = serde_json::to_vec(token).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Read a cluster join token (surrounding whitespace ignored): the member name, an address,
/// the secret and the fingerprint must be there.
pub fn decode_join(text: &str) -> Result<JoinToken, TokenError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| TokenError::Base64)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| TokenError::Json(e.to_string()))?;
    if value.get("server_name").is_none() && value.get("client_name").is_some() {
        return Err(TokenError::TrustToken);
    }
    let token: JoinToken =
        serde_json::from_value(value).map_err(|e| TokenError::Json(e.to_string()))?;
    if token.server_name.is_empty() {
        return Err(TokenError::Missing("member name"));
    }
    if token.addresses.iter().all(String::is_empty) {
        return Err(TokenError::Missing("cluster address"));
    }
    if token.secret.is_empty() {
        return Err(TokenError::Missing("secret"));
    }
    if token.fingerprint.is_empty() {
        return Err(TokenError::Missing("certificate fingerprint"));
    }
    Ok(token)
}

/// The join token a `POST /1.0/cluster/members` made: its operation's metadata, in the
/// token's own field names or Incus' operation spelling (`serverName`, `expiresAt`).
pub fn join_from_operation(metadata: &Value) -> Result<JoinToken, TokenError> {
    let text = |keys: &[&str]| {
        keys.iter()
            .filter_map(|key| metadata.get(*key).and_then(Value::as_str))
            .find(|v| !v.is_empty())
            .unwrap_or("")
            .to_string()
    };
    let addresses = metadata
        .get("addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let token = JoinToken {
        server_name: text(&["server_name", "serverName"]),
        fingerprint: text(&["fingerprint"]),
        addresses,
        secret: text(&["secret"]),
        expires_at: text(&["expires_at", "expiresAt"]),
        database: text(&["database"]),
    };
    // The same checks a reader makes.
    decode_join(&encode_join(&token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> AddToken {
        AddToken {
            client_name: "laptop".into(),
            fingerprint: "ab".repeat(32),
            addresses: vec!["127.0.0.1:8443".into()],
            secret: "s3cret".into(),
            expires_at: None,
        }
    }

    #[test]
    fn tokens_round_trip_as_incus_encodes_them() {
        let token = sample();
        let text = encode(&token);
        assert_eq!(decode(&text), Ok(token.clone()));
        assert_eq!(decode(&format!("  {text}\n")), Ok(token));
        // Standard alphabet with padding, JSON inside with Incus' field names.
        let json: Value = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        assert_eq!(
            json,
            json!({"client_name": "laptop", "fingerprint": "ab".repeat(32),
                   "addresses": ["127.0.0.1:8443"], "secret": "s3cret"})
        );
    }

    #[test]
    fn an_incus_token_with_an_expiry_decodes() {
        let json = json!({"client_name": "x", "fingerprint": "ff", "addresses": ["h:1"],
                          "secret": "s", "expires_at": "0001-01-01T00:00:00Z"});
        let text = base64::engine::general_purpose::STANDARD.encode(json.to_string());
        let token = decode(&text);
        assert_eq!(
            token.map(|t| t.expires_at),
            Ok(Some("0001-01-01T00:00:00Z".to_string()))
        );
    }

    #[test]
    fn urls_names_and_broken_tokens_are_not_tokens() {
        assert_eq!(decode("https://127.0.0.1:8443"), Err(TokenError::Base64));
        assert!(matches!(decode("aGVsbG8="), Err(TokenError::Json(_))));
        let mut token = sample();
        token.secret.clear();
        assert_eq!(decode(&encode(&token)), Err(TokenError::Missing("secret")));
        let mut token = sample();
        token.addresses.clear();
        assert_eq!(
            decode(&encode(&token)),
            Err(TokenError::Missing("server address"))
        );
    }

    #[test]
    fn tokens_are_made_from_the_operation_metadata() {
        let metadata = json!({"secret": "s3cret", "fingerprint": "ab".repeat(32),
                              "addresses": ["127.0.0.1:8443"],
                              "request": {"name": "laptop", "type": "client"},
                              "expiresAt": "2026-12-06T10:00:00Z"});
        let token = from_operation(&metadata, "ignored");
        let mut want = sample();
        want.expires_at = Some("2026-12-06T10:00:00Z".into());
        assert_eq!(token, Ok(want));
        assert_eq!(
            from_operation(&json!({"addresses": ["h:1"]}), "n"),
            Err(TokenError::Missing("secret"))
        );
    }

    fn join_sample() -> JoinToken {
        JoinToken {
            server_name: "node2".into(),
            fingerprint: "cd".repeat(32),
            addresses: vec!["10.0.0.1:8443".into()],
            secret: "j01n".into(),
            expires_at: "2026-12-06T10:00:00Z".into(),
            database: "postgres://ctl:pw@10.0.0.9:5432/ctl".into(),
        }
    }

    #[test]
    fn join_tokens_round_trip_as_incus_encodes_them() {
        let token = join_sample();
        let text = encode_join(&token);
        assert_eq!(decode_join(&text), Ok(token.clone()));
        assert_eq!(decode_join(&format!("{text}\n")), Ok(token));
        let json: Value = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        assert_eq!(
            json,
            json!({"server_name": "node2", "fingerprint": "cd".repeat(32),
                   "addresses": ["10.0.0.1:8443"], "secret": "j01n",
                   "expires_at": "2026-12-06T10:00:00Z",
                   "database": "postgres://ctl:pw@10.0.0.9:5432/ctl"})
        );
        // Incus' own JSON (no database) reads too.
        let incus = json!({"server_name": "n", "fingerprint": "ff", "addresses": ["h:1"],
                           "secret": "s", "expires_at": "2026-01-01T00:00:00Z"});
        let text = base64::engine::general_purpose::STANDARD.encode(incus.to_string());
        assert_eq!(decode_join(&text).map(|t| t.database), Ok(String::new()));
    }

    #[test]
    fn bad_join_tokens_say_why() {
        assert_eq!(decode_join("not a token!"), Err(TokenError::Base64));
        assert!(matches!(decode_join("aGVsbG8="), Err(TokenError::Json(_))));
        assert_eq!(decode_join(&encode(&sample())), Err(TokenError::TrustToken));
        let mut token = join_sample();
        token.server_name.clear();
        assert_eq!(
            decode_join(&encode_join(&token)),
            Err(TokenError::Missing("member name"))
        );
        let mut token = join_sample();
        token.addresses = vec![String::new()];
        assert_eq!(
            decode_join(&encode_join(&token)),
            Err(TokenError::Missing("cluster address"))
        );
        let mut token = join_sample();
        token.secret.clear();
        assert_eq!(
            decode_join(&encode_join(&token)),
            Err(TokenError::Missing("secret"))
        );
    }

    #[test]
    fn join_tokens_are_made_from_the_operation_metadata() {
        let ours = json!({"server_name": "node2", "fingerprint": "cd".repeat(32),
                          "addresses": ["10.0.0.1:8443"], "secret": "j01n",
                          "expires_at": "2026-12-06T10:00:00Z",
                          "database": "postgres://ctl:pw@10.0.0.9:5432/ctl"});
        assert_eq!(join_from_operation(&ours), Ok(join_sample()));
        let incus = json!({"serverName": "node2", "fingerprint": "cd".repeat(32),
                           "addresses": ["10.0.0.1:8443"], "secret": "j01n",
                           "expiresAt": "2026-12-06T10:00:00Z"});
        let mut want = join_sample();
        want.database.clear();
        assert_eq!(join_from_operation(&incus), Ok(want));
        assert_eq!(
            join_from_operation(&json!({"serverName": "x", "addresses": ["h:1"]})),
            Err(TokenError::Missing("secret"))
        );
    }
}
