//! The one place where API errors become HTTP responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    ShuttingDown(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        json_response(status, &serde_json::json!({ "msg": self.to_string() }))
    }
}

/// A JSON response; serialization of our own types cannot fail, but if it did the client gets a 500.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec(body) {
        Ok(b) => (status, b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"msg\":\"cannot serialize response: {e}\"}}").into_bytes(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

use crate::repository::mgr::MgrError;
use crate::repository::tenant::TenantError;
use crate::repository::timeline::GetError;

impl From<MgrError> for ApiError {
    fn from(e: MgrError) -> ApiError {
        match e {
            MgrError::NotFound(_) => ApiError::NotFound(e.to_string()),
            MgrError::ExistsDifferently(_) | MgrError::Detached(_) | MgrError::Broken { .. } => {
                ApiError::Conflict(e.to_string())
            }
            MgrError::Config(_) => ApiError::BadRequest(e.to_string()),
            MgrError::Tenant(t) => t.into(),
            MgrError::Redo(_) | MgrError::ShuttingDown => ApiError::ShuttingDown(e.to_string()),
            MgrError::File { .. } | MgrError::Remote(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> ApiError {
        match e {
            TenantError::TimelineNotFound(_) => ApiError::NotFound(e.to_string()),
            TenantError::TimelineExists(_) | TenantError::HasChildren(_) => {
                ApiError::Conflict(e.to_string())
            }
            TenantError::BranchAboveLast { .. } | TenantError::BranchBelowGcCutoff { .. } => {
                ApiError::NotAcceptable(e.to_string())
            }
            // Like a request to a detached tenant: 409, the client retries after attaching.
            TenantError::ShuttingDown => ApiError::Conflict(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<GetError> for ApiError {
    fn from(e: GetError) -> ApiError {
        match e {
            GetError::KeyNotFound { .. } => ApiError::NotFound(e.to_string()),
            GetError::BelowGcCutoff { .. }
            | GetError::NoBaseImage { .. }
            | GetError::NotAPage { .. } => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<DatadirError> for ApiError {
    fn from(e: DatadirError) -> ApiError {
        match e {
            DatadirError::Get(g) => g.into(),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

use crate::import::datadir::ImportError;
use crate::import::initdb::BootstrapError;
use crate::repository::datadir::DatadirError;
use crate::repository::timeline::PutError;

/// A concurrent DELETE (of the timeline or its tenant) won the race against a create or import: the
/// request conflicts with it, nothing of it is kept.
fn deleted_while_written() -> ApiError {
    ApiError::Conflict(
        "the timeline was deleted or shut down while data was being written into it".to_string(),
    )
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> ApiError {
        match e {
            // What the archive holds: the client's input.
            ImportError::Tar { .. }
            | ImportError::BadName { .. }
            | ImportError::NotBlockAligned { .. }
            | ImportError::Truncated { .. }
            | ImportError::Checksum { .. }
            | ImportError::Invalid { .. }
            | ImportError::Duplicate { .. }
            | ImportError::Tablespace { .. }
            | ImportError::UnsupportedEntry { .. }
            | ImportError::MissingControlFile
            | ImportError::WrongVersion { .. }
            | ImportError::LsnNotAboveLast { .. } => {
                ApiError::BadRequest(format!("cannot import the archive: {e}"))
            }
            ImportError::Cancelled => ApiError::ShuttingDown(e.to_string()),
            ImportError::Put(PutError::ShuttingDown) => deleted_while_written(),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<BootstrapError> for ApiError {
    fn from(e: BootstrapError) -> ApiError {
        match e {
            BootstrapError::Tenant(t) => t.into(),
            BootstrapError::Setup(_) => ApiError::ShuttingDown(format!("cannot bootstrap: {e}")),
            BootstrapError::Import(ImportError::Put(PutError::ShuttingDown)) => {
                deleted_while_written()
            }
            _ => ApiError::Internal(format!("bootstrap failed: {e}")),
        }
    }
}

impl From<crate::recover::RecoverError> for ApiError {
    fn from(e: crate::recover::RecoverError) -> ApiError {
        use crate::recover::RecoverError as R;
        match e {
            R::BadRequest(m) => ApiError::BadRequest(m),
            R::Conflict(m) => ApiError::Conflict(m),
            R::NotFound(_) => ApiError::NotFound(e.to_string()),
            R::NoArchive(_) => ApiError::BadRequest(e.to_string()),
            R::Cancelled => ApiError::ShuttingDown(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}
