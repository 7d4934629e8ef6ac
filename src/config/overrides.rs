//! Per-tenant overrides of the `[tenant_config]` defaults: every key optional. In JSON bodies of the
//! management API (unknown keys are errors naming the key) and in each tenant's `tenant.json`.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::tenant::TenantConfig;
use super::types::HumanDuration;

macro_rules! overrides {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// A tenant's own settings; absent keys take the node's `[tenant_config]` defaults.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TenantConfigOverrides {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl TenantConfigOverrides {
            /// The effective config: `defaults` with these overrides applied, validated.
            pub fn apply(&self, defaults: &TenantConfig) -> Result<TenantConfig, ConfigError> {
                let mut c = defaults.clone();
                $(
                    if let Some(v) = &self.$field {
                        c.$field = v.clone();
                    }
                )*
                c.validate("")?;
                Ok(c)
            }

            /// `patch` over these: a key set in the patch replaces; `unset` keys are removed.
            pub fn merge(&self, patch: &TenantConfigOverrides, unset: &[String]) -> TenantConfigOverrides {
                let mut out = self.clone();
                $(
                    if patch.$field.is_some() {
                        out.$field = patch.$field.clone();
                    }
                    if unset.iter().any(|k| k == stringify!($field)) {
                        out.$field = None;
                    }
                )*
                out
            }
        }
    };
}

overrides! {
    checkpoint_distance: u64,
    checkpoint_timeout: HumanDuration,
    compaction_target_size: u64,
    compaction_period: HumanDuration,
    compaction_threshold: usize,
    gc_horizon: u64,
    gc_period: HumanDuration,
    pitr_interval: HumanDuration,
    image_creation_threshold: usize,
    walreceiver_connect_timeout: HumanDuration,
    lagging_wal_timeout: HumanDuration,
    walredo_pool_size: usize,
    walredo_idle_timeout: HumanDuration,
    wal_archive_partial_interval: HumanDuration,
    wal_archive_retention: HumanDuration,
    scrub_period: HumanDuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_key_can_be_overridden() {
        let all: serde_json::Value = serde_json::to_value(TenantConfig::default()).unwrap();
        let o: TenantConfigOverrides = serde_json::from_value(all).unwrap();
        assert_eq!(
            o.apply(&TenantConfig::default()).unwrap(),
            TenantConfig::default()
        );
        let err = serde_json::from_str::<TenantConfigOverrides>(r#"{"bogus": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let bad = TenantConfigOverrides {
            walredo_pool_size: Some(0),
            ..Default::default()
        };
        assert!(bad.apply(&TenantConfig::default()).is_err());
    }
}
