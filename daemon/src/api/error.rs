//! The one place where domain errors become HTTP statuses and the error envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ctl_api::Response as Envelope;

use crate::images::ImageError;
use crate::instance::InstanceError;
use crate::network::NetworkError;
use crate::operations::OpError;
use crate::worker::files::FileError;

/// Any error a handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Operation(#[from] OpError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Trust(#[from] crate::remote::TrustError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    /// Something the request needs is away (a cluster's database or member): try again.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Instance(e) => instance_status(e),
            ApiError::Image(e) => image_status(e),
            ApiError::Network(e) => network_status(e),
            ApiError::Storage(e) => storage_status(e),
            ApiError::Remote(e) => remote_status(e),
            ApiError::Trust(e) => trust_status(e),
            ApiError::Operation(OpError::NotFound) => StatusCode::NOT_FOUND,
            ApiError::Operation(OpError::NotCancellable) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn remote_status(e: &crate::remote::RemoteError) -> StatusCode {
    use crate::remote::RemoteError as R;
    match e {
        // An address in use or not on the host is the request's problem.
        R::Config(_) | R::Bind { .. } | R::Invalid(_) => StatusCode::BAD_REQUEST,
        R::Forbidden(_) => StatusCode::FORBIDDEN,
        R::Trust(e) => trust_status(e),
        R::Db(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        R::Tls(_) | R::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn trust_status(e: &crate::remote::TrustError) -> StatusCode {
    use crate::remote::TrustError as T;
    match e {
        T::Invalid(_) => StatusCode::BAD_REQUEST,
        T::NotFound(_) => StatusCode::NOT_FOUND,
        T::Conflict(_) => StatusCode::CONFLICT,
        T::Db(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        T::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn storage_status(e: &crate::storage::StorageError) -> StatusCode {
    use crate::storage::StorageError as S;
    match e {
        S::PoolNotFound(_) | S::VolumeNotFound { .. } | S::SnapshotNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        S::Exists(_) | S::InUse(_) => StatusCode::CONFLICT,
        S::Invalid(_) => StatusCode::BAD_REQUEST,
        S::Db(_) | S::Io { .. } | S::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn instance_status(e: &InstanceError) -> StatusCode {
    use InstanceError as I;
    match e {
        I::NotFound(_)
        | I::ProfileNotFound(_)
        | I::SnapshotNotFound { .. }
        | I::BackupNotFound { .. } => StatusCode::NOT_FOUND,
        I::AlreadyExists(_)
        | I::Unrecorded(_)
        | I::SnapshotExists { .. }
        | I::ProfileExists(_)
        | I::BackupExists { .. } => StatusCode::CONFLICT,
        I::Forbidden(_) => StatusCode::FORBIDDEN,
        // The status of what the instance refused.
        I::ForInstance { source, .. } => instance_status(source),
        I::Network(e) => network_status(e),
        // A proxy that cannot listen (port in use, address not on the host) is the
        // request's problem, as in Incus.
        I::Name(_) | I::Config(_) | I::Invalid(_) | I::BadState(_) | I::Proxy { .. } => {
            StatusCode::BAD_REQUEST
        }
        I::Image(e) => image_status(e),
        I::File(e) => file_status(e),
        I::Storage(e) => storage_status(e),
        I::Db(_) | I::Worker(_) | I::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn image_status(e: &ImageError) -> StatusCode {
    match e {
        // An unknown image or alias is 404 (also in a create request, as the message lists
        // the known sources).
        ImageError::NotFound { .. } => StatusCode::NOT_FOUND,
        ImageError::Ambiguous(_) => StatusCode::BAD_REQUEST,
        ImageError::Remote(_) => StatusCode::BAD_GATEWAY,
        ImageError::InUse { .. } | ImageError::Exists(_) => StatusCode::CONFLICT,
        ImageError::Invalid(_) => StatusCode::BAD_REQUEST,
        ImageError::Build(_) | ImageError::Io { .. } | ImageError::Db(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn network_status(e: &NetworkError) -> StatusCode {
    match e {
        NetworkError::NotFound(_) => StatusCode::NOT_FOUND,
        NetworkError::AlreadyExists(_) | NetworkError::InUse { .. } => StatusCode::CONFLICT,
        NetworkError::Config(_) | NetworkError::Ipam(_) | NetworkError::Invalid(_) => {
            StatusCode::BAD_REQUEST
        }
        NetworkError::Db(_)
        | NetworkError::Worker(_)
        | NetworkError::Internal(_)
        | NetworkError::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn file_status(e: &FileError) -> StatusCode {
    match e {
        FileError::InvalidPath { .. } | FileError::Refused { .. } => StatusCode::BAD_REQUEST,
        FileError::NotFound { .. } => StatusCode::NOT_FOUND,
        FileError::Exists { .. } => StatusCode::CONFLICT,
        FileError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            // Server errors say little to the client; the log has the details.
            match &self {
                ApiError::Instance(InstanceError::Worker(e)) => e.to_string(),
                _ => self.to_string(),
            }
        } else {
            self.to_string()
        };
        (
            status,
            axum::Json(Envelope::error(status.as_u16(), message)),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{ConfigError, NameError};

    fn file(e: FileError) -> ApiError {
        InstanceError::File(e).into()
    }

    #[test]
    fn statuses() {
        let cases: Vec<(ApiError, u16)> = vec![
            (InstanceError::NotFound("c1".into()).into(), 404),
            (InstanceError::AlreadyExists("c1".into()).into(), 409),
            (
                InstanceError::Name(NameError {
                    name: "-".into(),
                    reason: "x",
                })
                .into(),
                400,
            ),
            (
                InstanceError::Config(ConfigError::UnknownKey("k".into())).into(),
                400,
            ),
            (InstanceError::BadState("running".into()).into(), 400),
            (
                ImageError::NotFound {
                    name: "x".into(),
                    known: vec![],
                }
                .into(),
                404,
            ),
            (ImageError::Remote("down".into()).into(), 502),
            (ImageError::Ambiguous("ab".into()).into(), 400),
            (
                ImageError::InUse {
                    fingerprint: "f".into(),
                    instances: vec!["c1".into()],
                }
                .into(),
                409,
            ),
            (OpError::NotFound.into(), 404),
            (NetworkError::NotFound("n".into()).into(), 404),
            (NetworkError::AlreadyExists("n".into()).into(), 409),
            (
                NetworkError::InUse {
                    name: "n".into(),
                    users: vec!["/1.0/instances/c1".into()],
                }
                .into(),
                409,
            ),
            (NetworkError::Invalid("overlap".into()).into(), 400),
            (
                InstanceError::Network(NetworkError::Invalid("unknown network".into())).into(),
                400,
            ),
            (InstanceError::ProfileNotFound("p".into()).into(), 404),
            (ApiError::Forbidden("secret".into()), 403),
            (InstanceError::Internal("x".into()).into(), 500),
            (
                file(FileError::InvalidPath {
                    path: "x".into(),
                    reason: "r",
                }),
                400,
            ),
            (
                file(FileError::Refused {
                    path: "/d".into(),
                    reason: "is a directory".into(),
                }),
                400,
            ),
            (file(FileError::NotFound { path: "/x".into() }), 404),
            (file(FileError::Exists { path: "/x".into() }), 409),
            (
                file(FileError::Io {
                    path: "/x".into(),
                    source: std::io::Error::other("disk"),
                }),
                500,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e}");
        }
    }
}
