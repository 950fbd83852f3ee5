//! Errors of the client library: transport, API envelope, operations and websockets.

/// Everything that can go wrong talking to ctld.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be reached: its Unix socket (daemon not running, wrong `--dir`,
    /// permissions) or a remote's address.
    #[error("cannot connect to ctld at {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },

    /// The TLS handshake with a remote failed.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// A remote presented another certificate than the one pinned when it was added.
    #[error(
        "the server at {addr} presented certificate {seen}, but remote \"{remote}\" is pinned \
         to certificate {expected}; if the server's certificate changed on purpose, remove \
         the remote and add it again"
    )]
    CertificateMismatch {
        remote: String,
        addr: String,
        expected: String,
        seen: String,
    },

    /// The client's own certificate or a pinned server certificate could not be used.
    #[error("client certificate")]
    Identity(#[from] crate::tls::TlsError),

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

    /// Name the remote in a certificate mismatch.
    pub fn for_remote(self, name: &str) -> Self {
        match self {
            Error::CertificateMismatch {
                addr,
                expected,
                seen,
                ..
            } => Error::CertificateMismatch {
                remote: name.to_string(),
                addr,
                expected,
                seen,
            },
            other => other,
        }
    }

    /// Whether the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect { .. })
    }
}
