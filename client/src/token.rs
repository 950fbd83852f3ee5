//! Trust tokens ([`ctl_api::CertificateAddToken`], as Incus' own): what `ctl config trust add` prints and
//! `ctl remote add NAME TOKEN` reads. A token is the standard (padded) base64 of a JSON
//! object naming the new client, the server certificate's fingerprint, the server's
//! addresses and the one-time secret.

use base64::Engine as _;
use serde_json::Value;

pub use ctl_api::CertificateAddToken as AddToken;

/// Why a string is not a usable token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not base64")]
    Base64,
    #[error("not a token: {0}")]
    Json(String),
    #[error("the token has no {0}")]
    Missing(&'static str),
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
}
