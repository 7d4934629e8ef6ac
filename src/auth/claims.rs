//! The claims of a token and the one permission check.

use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::id::TenantId;

/// Neon's scope names (`libs/utils/src/auth.rs`, serialized in lowercase), so that a token made for another
/// Neon service is recognised and refused by name rather than as garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One tenant's routes and page service commands.
    Tenant,
    /// Neon's per-endpoint tenant scope; not accepted by a pageserver.
    TenantEndpoint,
    /// Everything of this pageserver.
    PageServerApi,
    SafekeeperData,
    #[serde(rename = "generations_api")]
    GenerationsApi,
    Admin,
    Infra,
    Scrubber,
    #[serde(rename = "controller_peer")]
    ControllerPeer,
}

/// The claims this pageserver reads. Unknown claims are ignored, as JWT wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// Expiry, seconds since the epoch; checked by the decoder when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// May the holder of `claims` do something that concerns `tenant` (None: the node as a whole)?
pub fn check_permission(claims: &Claims, tenant: Option<TenantId>) -> Result<(), AuthError> {
    match (claims.scope, tenant) {
        (Scope::PageServerApi, _) => Ok(()),
        (Scope::Tenant, None) => Err(AuthError::Forbidden(
            "a token of scope tenant cannot reach routes that concern no single tenant".into(),
        )),
        (Scope::Tenant, Some(wanted)) => match claims.tenant_id {
            Some(own) if own == wanted => Ok(()),
            Some(own) => Err(AuthError::Forbidden(format!(
                "the token is for tenant {own}, not {wanted}"
            ))),
            None => Err(AuthError::Forbidden(
                "a token of scope tenant must name its tenant_id".into(),
            )),
        },
        (other, _) => Err(AuthError::Forbidden(format!(
            "scope {} is not accepted by a pageserver",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        TenantId([n; 16])
    }

    #[test]
    fn scopes_decide() {
        let api = Claims {
            scope: Scope::PageServerApi,
            tenant_id: None,
            exp: None,
        };
        assert!(check_permission(&api, None).is_ok());
        assert!(check_permission(&api, Some(tenant(1))).is_ok());

        let t1 = Claims {
            scope: Scope::Tenant,
            tenant_id: Some(tenant(1)),
            exp: None,
        };
        assert!(check_permission(&t1, Some(tenant(1))).is_ok());
        let other = check_permission(&t1, Some(tenant(2))).unwrap_err();
        assert!(other.to_string().contains("not 02020202"), "{other}");
        assert!(check_permission(&t1, None).is_err());

        let nameless = Claims {
            tenant_id: None,
            ..t1.clone()
        };
        assert!(check_permission(&nameless, Some(tenant(1))).is_err());

        let sk = Claims {
            scope: Scope::SafekeeperData,
            tenant_id: Some(tenant(1)),
            exp: None,
        };
        let err = check_permission(&sk, Some(tenant(1))).unwrap_err();
        assert!(err.to_string().contains("safekeeperdata"), "{err}");
    }

    #[test]
    fn claims_parse_as_neon_writes_them() {
        let c: Claims = serde_json::from_str(
            r#"{"scope":"tenant","tenant_id":"0123456789abcdef0123456789abcdef","endpoint_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(c.scope, Scope::Tenant);
        let c: Claims = serde_json::from_str(r#"{"scope":"generations_api"}"#).unwrap();
        assert_eq!(c.scope, Scope::GenerationsApi);
        assert!(serde_json::from_str::<Claims>(r#"{"scope":"root"}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"scope":"tenant","tenant_id":"xyz"}"#).is_err());
    }
}
