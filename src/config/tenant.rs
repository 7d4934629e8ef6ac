//! Per-tenant settings: the `[tenant_config]` table of `pageserver.toml` gives the defaults every tenant starts
//! with; a tenant may override them (see the management API).

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::types::HumanDuration;

const MIB: u64 = 1024 * 1024;

/// Tunables of one tenant. Defaults follow Neon's (`tenant_conf_defaults` in Neon's
/// `libs/pageserver_api/src/config.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Bytes of WAL in the open in-memory layer before it is frozen and flushed to an L0 delta layer.
    pub checkpoint_distance: u64,
    /// Longest time a non-empty in-memory layer stays open before it is flushed.
    pub checkpoint_timeout: HumanDuration,
    /// Target size of a layer file written by compaction.
    pub compaction_target_size: u64,
    /// How often background compaction runs; "0 s" disables it.
    pub compaction_period: HumanDuration,
    /// Number of L0 delta layers that triggers L0 -> L1 compaction.
    pub compaction_threshold: usize,
    /// GC keeps at least this many bytes of WAL history below last_record_lsn.
    pub gc_horizon: u64,
    /// How often background GC runs; "0 s" disables it.
    pub gc_period: HumanDuration,
    /// GC keeps every version newer than now minus this interval (point-in-time recovery window).
    pub pitr_interval: HumanDuration,
    /// Number of deltas above the newest image of a key range that makes compaction write a new image.
    pub image_creation_threshold: usize,
    /// Time allowed for connecting to a timeline's WAL source before the attempt is abandoned and retried.
    pub walreceiver_connect_timeout: HumanDuration,
    /// A WAL source silent for this long is considered lost and reconnected; after half of it in silence the
    /// receiver asks the source for a reply (a healthy idle primary answers with a keepalive).
    pub lagging_wal_timeout: HumanDuration,
    /// Number of `postgres --wal-redo` processes the tenant may run at once.
    pub walredo_pool_size: usize,
    /// A `postgres --wal-redo` process that served no request for this long is stopped (the pool grows
    /// again with load); "0 s" keeps processes until the tenant is detached or the pageserver stops.
    pub walredo_idle_timeout: HumanDuration,
    /// How often the tail of the WAL segment being archived is uploaded (also when the source is idle and at
    /// shutdown); "0 s" uploads it only then.
    pub wal_archive_partial_interval: HumanDuration,
    /// Completed WAL archive segments older than this are removed; "0 s" keeps them all. Independent of
    /// `pitr_interval` and GC: a recovery without `from_lsn` needs every segment since the base.
    pub wal_archive_retention: HumanDuration,
    /// How often a background recovery plus scrub checks one of the tenant's timelines against its archive
    /// (docs/wal-archive.md); "0 s" (the default) never.
    pub scrub_period: HumanDuration,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            checkpoint_distance: 256 * MIB,
            checkpoint_timeout: HumanDuration::from_secs(10 * 60),
            compaction_target_size: 128 * MIB,
            compaction_period: HumanDuration::from_secs(20),
            compaction_threshold: 10,
            gc_horizon: 64 * MIB,
            gc_period: HumanDuration::from_secs(3600),
            pitr_interval: HumanDuration::from_secs(7 * 24 * 3600),
            image_creation_threshold: 3,
            walreceiver_connect_timeout: HumanDuration::from_secs(10),
            lagging_wal_timeout: HumanDuration::from_secs(10),
            walredo_pool_size: 1,
            walredo_idle_timeout: HumanDuration::from_secs(60),
            wal_archive_partial_interval: HumanDuration::from_secs(60),
            wal_archive_retention: HumanDuration::from_secs(0),
            scrub_period: HumanDuration::from_secs(0),
        }
    }
}

/// The keys of [`TenantConfig`]; they may also stand at the top level of `pageserver.toml` or in `-c`
/// overrides, as a shorthand for `tenant_config.<key>`. A unit test keeps this list equal to the struct.
pub const TENANT_CONFIG_KEYS: &[&str] = &[
    "checkpoint_distance",
    "checkpoint_timeout",
    "compaction_target_size",
    "compaction_period",
    "compaction_threshold",
    "gc_horizon",
    "gc_period",
    "pitr_interval",
    "image_creation_threshold",
    "walreceiver_connect_timeout",
    "lagging_wal_timeout",
    "walredo_pool_size",
    "walredo_idle_timeout",
    "wal_archive_partial_interval",
    "wal_archive_retention",
    "scrub_period",
];

impl TenantConfig {
    /// Checks values that parse but make no sense. `prefix` is prepended to key names in errors.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, expected: &str| {
            Err(ConfigError::Invalid {
                key: format!("{prefix}{key}"),
                expected: expected.to_string(),
            })
        };
        if self.checkpoint_distance == 0 {
            return bad("checkpoint_distance", "a byte count greater than 0");
        }
        if self.checkpoint_timeout.get().is_zero() {
            return bad("checkpoint_timeout", "a duration greater than 0");
        }
        if self.compaction_target_size < 8192 {
            return bad("compaction_target_size", "a byte count of at least 8192");
        }
        if self.compaction_threshold == 0 {
            return bad("compaction_threshold", "a layer count of at least 1");
        }
        if self.image_creation_threshold == 0 {
            return bad("image_creation_threshold", "a delta count of at least 1");
        }
        if self.walreceiver_connect_timeout.get().is_zero() {
            return bad("walreceiver_connect_timeout", "a duration greater than 0");
        }
        if self.lagging_wal_timeout.get().is_zero() {
            return bad("lagging_wal_timeout", "a duration greater than 0");
        }
        if !(1..=64).contains(&self.walredo_pool_size) {
            return bad("walredo_pool_size", "a process count from 1 to 64");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_list_matches_struct() {
        let value = toml::Value::try_from(TenantConfig::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_table()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut listed = TENANT_CONFIG_KEYS.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }

    #[test]
    fn defaults_are_valid() {
        TenantConfig::default().validate("").unwrap();
    }
}
