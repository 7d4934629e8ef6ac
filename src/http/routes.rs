//! The route table and its handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::error::{ApiError, json_response};
use super::{recover, tenants, timelines};

/// What handlers share: the node's state.
pub struct ApiState {
    pub node_id: u64,
    /// The page service's listening address (reported by `GET /v1/status`).
    pub pg_addr: String,
    pub mgr: std::sync::Arc<crate::repository::mgr::TenantManager>,
    /// The validation keys when `auth_validation_public_key_path` is set (shared with the page service).
    pub jwt: Option<Arc<crate::auth::JwtAuth>>,
    /// The keys that HTTP requests are checked with: Some when `http_auth_type = "NeonJWT"`.
    pub http_auth: Option<Arc<crate::auth::JwtAuth>>,
}

pub type HandlerResult = Result<Response<Full<Bytes>>, ApiError>;
/// Path parameters by name, in the order the route's path names them.
pub type PathParams = Vec<(&'static str, String)>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// One request as a handler sees it: the shared state, the path parameters and the request itself.
pub struct RequestContext {
    pub state: Arc<ApiState>,
    pub params: PathParams,
    /// Method, URI, headers.
    pub head: hyper::http::request::Parts,
    /// The body, until a handler reads it.
    pub body: Option<Incoming>,
    /// The caller's verified claims (None when HTTP auth is off or the route is open).
    pub claims: Option<crate::auth::Claims>,
}

impl RequestContext {
    pub fn new(
        state: Arc<ApiState>,
        params: PathParams,
        request: Request<Incoming>,
        claims: Option<crate::auth::Claims>,
    ) -> RequestContext {
        let (head, body) = request.into_parts();
        RequestContext {
            state,
            params,
            head,
            body: Some(body),
            claims,
        }
    }
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

macro_rules! route {
    ($method:ident, $path:literal, $handler:path) => {
        Route {
            method: Method::$method,
            path: $path,
            handler: |ctx| Box::pin($handler(ctx)),
        }
    };
}

/// Every route of the API. The OpenAPI document (openapi.yaml, served at /swagger.yml) must list exactly these.
pub static ROUTES: &[Route] = &[
    route!(GET, "/v1/status", status),
    route!(GET, "/v1/progress", progress),
    route!(GET, "/metrics", super::metrics::handler),
    route!(GET, "/swagger.yml", swagger),
    route!(
        POST,
        "/v1/reload_auth_validation_keys",
        reload_auth_validation_keys
    ),
    route!(GET, "/v1/tenant", tenants::list),
    route!(POST, "/v1/tenant", tenants::create),
    route!(PATCH, "/v1/tenant/config", tenants::patch_config),
    route!(GET, "/v1/tenant/:tenant_id", tenants::detail),
    route!(DELETE, "/v1/tenant/:tenant_id", tenants::delete),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/location_config",
        tenants::location_config
    ),
    route!(GET, "/v1/tenant/:tenant_id/config", tenants::get_config),
    route!(
        POST,
        "/v1/tenant/:tenant_id/walredo_ping",
        tenants::walredo_ping
    ),
    route!(GET, "/v1/tenant/:tenant_id/timeline", timelines::list),
    route!(POST, "/v1/tenant/:tenant_id/timeline", timelines::create),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id",
        timelines::detail
    ),
    route!(
        DELETE,
        "/v1/tenant/:tenant_id/timeline/:timeline_id",
        timelines::delete
    ),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/wal_source",
        timelines::set_wal_source
    ),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/import_basebackup",
        timelines::import_basebackup
    ),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/do_gc",
        timelines::do_gc
    ),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/compact",
        timelines::compact
    ),
    route!(
        PUT,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/checkpoint",
        timelines::checkpoint
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/getpage",
        timelines::getpage
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/get_lsn_by_timestamp",
        timelines::get_lsn_by_timestamp
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/restore_points",
        timelines::restore_points
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/layer_map.svg",
        timelines::layer_map_svg
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/keyspace",
        timelines::keyspace
    ),
    route!(
        GET,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/layer",
        timelines::layers
    ),
    route!(
        POST,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/recover",
        recover::recover
    ),
    route!(
        POST,
        "/v1/tenant/:tenant_id/timeline/:timeline_id/scrub",
        recover::scrub
    ),
    route!(
        POST,
        "/v1/tenant/:tenant_id/recover",
        recover::recover_tenant
    ),
    route!(GET, "/v1/tenant/:tenant_id/job", recover::jobs),
    route!(GET, "/v1/tenant/:tenant_id/job/:job_id", recover::job),
];

/// The OpenAPI document of the API.
pub const OPENAPI: &str = include_str!("openapi.yaml");

async fn swagger(_ctx: RequestContext) -> HandlerResult {
    let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/yaml"),
    );
    Ok(response)
}

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
        &serde_json::json!({ "id": ctx.state.node_id, "pg_addr": ctx.state.pg_addr }),
    ))
}

/// Long work running now ([`crate::progress`]).
async fn progress(_ctx: RequestContext) -> HandlerResult {
    Ok(json_response(StatusCode::OK, &crate::progress::list()))
}

/// Reads the validation keys again from `auth_validation_public_key_path`; the old keys stay on error.
async fn reload_auth_validation_keys(ctx: RequestContext) -> HandlerResult {
    let Some(jwt) = ctx.state.jwt.clone() else {
        return Err(ApiError::BadRequest(
            "no auth_validation_public_key_path is configured".into(),
        ));
    };
    let keys = tokio::task::spawn_blocking(move || jwt.reload())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("keys not reloaded (the old ones stay): {e}")))?;
    tracing::info!(keys, "auth validation keys reloaded");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "keys": keys }),
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

    /// Every route is in the OpenAPI document and every path+method there is a route.
    #[test]
    fn openapi_lists_exactly_the_routes() {
        let mut documented = std::collections::BTreeSet::new();
        let mut path: Option<String> = None;
        for line in OPENAPI.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = Some(format!("/{}", p).replace('{', ":").replace('}', ""));
            } else if line.starts_with("  ") && !line.starts_with("   ") {
                path = None;
            } else if let (Some(p), Some(m)) = (
                &path,
                line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
            ) && ["get", "put", "post", "patch", "delete"].contains(&m)
            {
                documented.insert((m.to_uppercase(), p.clone()));
            }
            if !line.starts_with(' ') && !line.is_empty() && !line.starts_with("paths") {
                path = None;
            }
        }
        let routed: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(documented, routed);
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
