//! Who may call which route: the one check of the HTTP edge, made before the handler runs (and so before any
//! tenant is looked up). With `http_auth_type = "Trust"` everyone may call everything.
//!
//! A route's access follows from its path, so that a new route cannot be added without one:
//! - `/v1/status`, `/swagger.yml`, `/metrics`: open, as in Neon;
//! - a path with `:tenant_id`: that tenant's (scope `tenant` with that `tenant_id`, or `pageserverapi`);
//! - `PATCH /v1/tenant/config`, whose tenant is in the body: any valid token here, the handler calls
//!   [`RequestContext::authorize_tenant`] once it has the id (Neon checks this route the same way);
//! - every other route concerns the node as a whole: scope `pageserverapi` only.
//!
//! A missing or malformed `Authorization` header is 401; a token that does not verify, has expired, or does
//! not allow the route is 403.

use hyper::Method;
use hyper::header::AUTHORIZATION;

use super::error::ApiError;
use super::routes::{PathParams, RequestContext, Route};
use crate::auth::{AuthError, Claims, check_permission};
use crate::id::TenantId;

/// Routes that anyone may call, whatever the auth type.
const OPEN: &[&str] = &["/v1/status", "/swagger.yml", "/metrics"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Tenant,
    TenantInBody,
    Node,
}

pub fn access_of(route: &Route) -> Access {
    if OPEN.contains(&route.path) {
        Access::Open
    } else if route.path.split('/').any(|s| s == ":tenant_id") {
        Access::Tenant
    } else if route.method == Method::PATCH && route.path == "/v1/tenant/config" {
        Access::TenantInBody
    } else {
        Access::Node
    }
}

/// The claims of the caller of `route` if it may call it (None when auth is off or the route is open).
pub fn authorize(
    ctx_state: &super::ApiState,
    route: &Route,
    params: &PathParams,
    headers: &hyper::HeaderMap,
) -> Result<Option<Claims>, ApiError> {
    let Some(jwt) = ctx_state.http_auth.as_ref() else {
        return Ok(None);
    };
    let access = access_of(route);
    if access == Access::Open {
        return Ok(None);
    }
    let token = bearer(headers)?;
    let claims = jwt.decode(token)?;
    match access {
        Access::Open | Access::TenantInBody => {}
        Access::Node => check_permission(&claims, None)?,
        Access::Tenant => {
            let raw = params
                .iter()
                .find(|(n, _)| *n == "tenant_id")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            let tenant: TenantId = raw
                .parse()
                .map_err(|e: crate::id::IdParseError| ApiError::BadRequest(e.to_string()))?;
            check_permission(&claims, Some(tenant))?;
        }
    }
    Ok(Some(claims))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &hyper::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::Missing("send Authorization: Bearer <token>"))?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII"))?;
    let (kind, token) = value.split_once(' ').ok_or(AuthError::Malformed(
        "expected Authorization: Bearer <token>",
    ))?;
    if !kind.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "only the Bearer scheme is accepted (Authorization: Bearer <token>)",
        ));
    }
    Ok(token.trim())
}

impl RequestContext {
    /// For routes whose tenant is not in the path: may the caller act on `tenant`?
    pub fn authorize_tenant(&self, tenant: TenantId) -> Result<(), ApiError> {
        match &self.claims {
            Some(claims) => Ok(check_permission(claims, Some(tenant))?),
            None if self.state.http_auth.is_some() => Err(ApiError::Internal(
                "route was not authorized before its handler ran".into(),
            )),
            None => Ok(()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing(_) | AuthError::Malformed(_) => {
                ApiError::Unauthorized(e.to_string())
            }
            AuthError::InvalidToken(_) | AuthError::Forbidden(_) => {
                ApiError::Forbidden(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ROUTES;

    #[test]
    fn every_route_has_the_access_its_path_says() {
        let find = |m: Method, p: &str| {
            ROUTES
                .iter()
                .find(|r| r.method == m && r.path == p)
                .unwrap()
        };
        assert_eq!(access_of(find(Method::GET, "/v1/status")), Access::Open);
        assert_eq!(access_of(find(Method::GET, "/metrics")), Access::Open);
        assert_eq!(access_of(find(Method::GET, "/v1/tenant")), Access::Node);
        assert_eq!(access_of(find(Method::POST, "/v1/tenant")), Access::Node);
        assert_eq!(
            access_of(find(Method::POST, "/v1/reload_auth_validation_keys")),
            Access::Node
        );
        assert_eq!(
            access_of(find(Method::PATCH, "/v1/tenant/config")),
            Access::TenantInBody
        );
        for r in ROUTES.iter().filter(|r| r.path.contains(":tenant_id")) {
            assert_eq!(access_of(r), Access::Tenant, "{}", r.path);
        }
        assert_eq!(
            ROUTES
                .iter()
                .filter(|r| access_of(r) == Access::Open)
                .count(),
            3
        );
    }

    #[test]
    fn bearer_header_shapes() {
        let mut h = hyper::HeaderMap::new();
        assert!(matches!(bearer(&h), Err(AuthError::Missing(_))));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(matches!(bearer(&h), Err(AuthError::Malformed(_))));
        h.insert(AUTHORIZATION, "Bearer".parse().unwrap());
        assert!(matches!(bearer(&h), Err(AuthError::Malformed(_))));
        h.insert(AUTHORIZATION, "bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "a.b.c");
    }
}
