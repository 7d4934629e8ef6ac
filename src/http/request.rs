//! Reading requests: path ids, query parameters, JSON bodies (size-limited; unknown fields are 400s that name
//! the field).

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::routes::RequestContext;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;

/// Largest JSON body accepted.
const MAX_JSON_BODY: usize = 1 << 20;

impl RequestContext {
    pub fn tenant_id(&self) -> Result<TenantId, ApiError> {
        let s = self.param("tenant_id")?;
        s.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid tenant id {s:?}: expected 32 hex digits"))
        })
    }

    pub fn timeline_id(&self) -> Result<TimelineId, ApiError> {
        let s = self.param("timeline_id")?;
        s.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid timeline id {s:?}: expected 32 hex digits"))
        })
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.head.uri.query()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    pub fn query_lsn(&self, name: &str) -> Result<Option<Lsn>, ApiError> {
        match self.query(name) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid {name} {s:?}: expected an LSN such as 0/16B3740"
                ))
            }),
        }
    }

    pub fn query_bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.query(name).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") | Some("") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "invalid {name} {other:?}: expected true or false"
            ))),
        }
    }

    /// The whole body, at most `limit` bytes.
    /// The request's Content-Length, if it has a valid one.
    pub fn content_length(&self) -> Option<u64> {
        self.head
            .headers
            .get(hyper::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    pub async fn body_bytes(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Err(ApiError::Internal("the request body was read twice".into()));
        };
        match Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => Err(ApiError::BadRequest(format!(
                "cannot read the request body: {e}"
            ))),
        }
    }

    /// The body as JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let bytes = self.body_bytes(MAX_JSON_BODY).await?;
        parse_json(&bytes)
    }
}

/// Parses JSON; an error names the path of the field it is about.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| path_error("request body", e))
}

/// Deserializes a JSON value; an error names the path of the field it is about.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(what, e))
}

fn path_error(what: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        ApiError::BadRequest(format!("invalid {what}: {}", e.inner()))
    } else {
        ApiError::BadRequest(format!("invalid {what}: `{path}`: {}", e.inner()))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes() {
        assert_eq!(
            percent_decode("2026-11-21T10%3A00%3A00Z"),
            "2026-11-21T10:00:00Z"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
