//! The route table and its handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::error::{ApiError, json_response};

/// What handlers share: the node's state.
#[derive(Debug)]
pub struct ApiState {
    pub node_id: u64,
}

pub type HandlerResult = Result<Response<Full<Bytes>>, ApiError>;
/// Path parameters by name, in the order the route's path names them.
pub type PathParams = Vec<(&'static str, String)>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// One request as a handler sees it: the shared state, the path parameters and the request itself.
pub struct RequestContext {
    pub state: Arc<ApiState>,
    pub params: PathParams,
    pub request: Request<Incoming>,
}

impl RequestContext {
    /// A path parameter by name (the `:name` segments of the route's path).
    pub fn param(&self, name: &str) -> Result<&str, ApiError> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::Internal(format!("route has no parameter {name}")))
    }
}

pub struct Route {
    pub method: Method,
    /// Path with `:name` segments for parameters, as in the OpenAPI document with `{name}`.
    pub path: &'static str,
    pub handler: fn(RequestContext) -> BoxFuture,
}

/// Every route of the API. The OpenAPI document must list exactly these.
pub static ROUTES: &[Route] = &[Route {
    method: Method::GET,
    path: "/v1/status",
    handler: |ctx| Box::pin(status(ctx)),
}];

/// Finds the route for a method and path: `Ok(None)` when no route has the path, `Err` when routes have the
/// path but not the method.
pub fn find<'a>(method: &Method, path: &str) -> Result<Option<(&'a Route, PathParams)>, ApiError> {
    let mut path_matched = false;
    for route in ROUTES {
        if let Some(params) = match_path(route.path, path) {
            if route.method == *method {
                return Ok(Some((route, params)));
            }
            path_matched = true;
        }
    }
    if path_matched {
        Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        })
    } else {
        Ok(None)
    }
}

fn match_path(pattern: &'static str, path: &str) -> Option<PathParams> {
    let mut params = Vec::new();
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) => {
                if let Some(name) = p.strip_prefix(':') {
                    if s.is_empty() {
                        return None;
                    }
                    params.push((name, s.to_string()));
                } else if p != s {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

async fn status(ctx: RequestContext) -> HandlerResult {
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "id": ctx.state.node_id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_with_parameters() {
        assert_eq!(match_path("/v1/status", "/v1/status"), Some(vec![]));
        assert_eq!(match_path("/v1/status", "/v1/status/"), None);
        assert_eq!(
            match_path("/v1/tenant/:tenant_id", "/v1/tenant/abc"),
            Some(vec![("tenant_id", "abc".to_string())])
        );
        assert_eq!(match_path("/v1/tenant/:tenant_id", "/v1/tenant/"), None);
        assert_eq!(match_path("/v1/tenant/:tenant_id", "/v1/tenant/a/b"), None);
    }

    #[test]
    fn wrong_method_is_405_and_unknown_path_is_none() {
        assert!(find(&Method::GET, "/v1/status").unwrap().is_some());
        assert!(matches!(
            find(&Method::POST, "/v1/status"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(find(&Method::GET, "/v2/nothing").unwrap().is_none());
    }
}
