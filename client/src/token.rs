//! Trust tokens, as Incus' `CertificateAddToken`: what `ctl config trust add` prints and
//! `ctl remote add NAME TOKEN` reads. A token is the standard (padded) base64 of a JSON
//! object naming the new client, the server certificate's fingerprint, the server's
//! addresses and the one-time secret.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A decoded trust token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddToken {
    pub client_name: String,
    /// Fingerprint of the server's certificate.
    pub fingerprint: String,
    /// `HOST:PORT` addresses the server listens on.
    pub addresses: Vec<String>,
    pub secret: String,
    /// RFC 3339; left out when the token does not expire.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
}

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

impl AddToken {
    /// The token as printed: base64 of its JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Read a token (surrounding whitespace ignored). Every field but the expiry must be
    /// present and not empty.
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
            .unwrap_or("")
            .to_string();
        let token = AddToken {
            client_name: name.to_string(),
            fingerprint: text("fingerprint").to_string(),
            addresses,
            secret: text("secret").to_string(),
            expires_at,
        };
        // The same checks a reader makes.
        AddToken::decode(&token.encode())
    }
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
            expires_at: String::new(),
        }
    }

    #[test]
    fn tokens_round_trip_as_incus_encodes_them() {
        let token = sample();
        let text = token.encode();
        assert_eq!(AddToken::decode(&text), Ok(token.clone()));
        assert_eq!(AddToken::decode(&format!("  {text}\n")), Ok(token));
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
        let token = AddToken::decode(&text);
        assert_eq!(
            token.map(|t| t.expires_at),
            Ok("0001-01-01T00:00:00Z".to_string())
        );
    }

    #[test]
    fn urls_names_and_broken_tokens_are_not_tokens() {
        assert_eq!(
            AddToken::decode("https://127.0.0.1:8443"),
            Err(TokenError::Base64)
        );
        assert!(matches!(
            AddToken::decode("aGVsbG8="),
            Err(TokenError::Json(_))
        ));
        let mut token = sample();
        token.secret.clear();
        assert_eq!(
            AddToken::decode(&token.encode()),
            Err(TokenError::Missing("secret"))
        );
        let mut token = sample();
        token.addresses.clear();
        assert_eq!(
            AddToken::decode(&token.encode()),
            Err(TokenError::Missing("server address"))
        );
    }

    #[test]
    fn tokens_are_made_from_the_operation_metadata() {
        let metadata = json!({"secret": "s3cret", "fingerprint": "ab".repeat(32),
                              "addresses": ["127.0.0.1:8443"],
                              "request": {"name": "laptop", "type": "client"},
                              "expiresAt": "2026-12-06T10:00:00Z"});
        let token = AddToken::from_operation(&metadata, "ignored");
        let mut want = sample();
        want.expires_at = "2026-12-06T10:00:00Z".into();
        assert_eq!(token, Ok(want));
        assert_eq!(
            AddToken::from_operation(&json!({"addresses": ["h:1"]}), "n"),
            Err(TokenError::Missing("secret"))
        );
    }
}
