//! Errors of the client library: transport, API envelope, operations and websockets.

use std::path::PathBuf;

/// Everything that can go wrong talking to ctld.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Unix socket could not be reached (daemon not running, wrong `--dir`, permissions).
    #[error("cannot connect to ctld at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP exchange itself failed.
    #[error("http request {method} {path} failed")]
    Http {
        method: String,
        path: String,
        #[source]
        source: hyper::Error,
    },

    /// The server answered with an error envelope; `message` is its `error` field.
    #[error("{message}")]
    Api { code: u16, message: String },

    /// A background operation ended in failure or was cancelled; `message` is its `err`.
    #[error("{message}")]
    Operation { id: String, message: String },

    /// The server answered something that is not the expected JSON.
    #[error("cannot decode {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The answer was well formed but not what the protocol promises.
    #[error("unexpected answer from ctld: {0}")]
    Protocol(String),

    /// A websocket of an operation failed.
    #[error("websocket {stream} of operation {operation}")]
    Websocket {
        operation: String,
        stream: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },

    /// The event stream (`/1.0/events`) failed.
    #[error("event stream failed")]
    Events(#[source] Box<tokio_tungstenite::tungstenite::Error>),

    /// Local I/O (stdin, stdout, stderr) failed.
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP-like status code of an API error, if this is one.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }
}
