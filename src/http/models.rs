//! JSON shapes of the management API, following Neon's where Neon has them (Neon's
//! `libs/pageserver_api/src/models.rs`; docs/operations.md).

use serde::{Deserialize, Serialize};

use crate::config::TenantConfigOverrides;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::repository::timeline::Timeline;

#[derive(Debug, Serialize)]
pub struct AttachmentStatus {
    pub slug: &'static str,
}

#[derive(Debug, Serialize)]
pub struct TenantInfo {
    pub id: TenantId,
    /// "Active", or "Broken" for a tenant that could not be loaded.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_reason: Option<String>,
    pub current_physical_size: u64,
    pub attachment_status: AttachmentStatus,
    pub generation: u32,
}

#[derive(Debug, Serialize)]
pub struct WalRedoInfo {
    /// Pids of the tenant's live `postgres --wal-redo` processes.
    pub pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct TenantDetails {
    #[serde(flatten)]
    pub info: TenantInfo,
    pub walredo: WalRedoInfo,
    pub timelines: Vec<TimelineId>,
}

#[derive(Debug, Serialize)]
pub struct TimelineInfo {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub ancestor_timeline_id: Option<TimelineId>,
    pub ancestor_lsn: Option<Lsn>,
    pub last_record_lsn: Lsn,
    pub prev_record_lsn: Option<Lsn>,
    pub disk_consistent_lsn: Lsn,
    pub remote_consistent_lsn: Lsn,
    pub remote_consistent_lsn_visible: Lsn,
    pub applied_gc_cutoff_lsn: Lsn,
    pub min_readable_lsn: Lsn,
    pub initdb_lsn: Lsn,
    pub pg_version: u32,
    pub state: &'static str,
    pub wal_source_connstr: Option<String>,
    pub current_physical_size: u64,
    pub is_archived: bool,
    pub walreceiver_status: Option<String>,
    pub last_received_msg_lsn: Option<Lsn>,
    pub last_received_msg_ts: Option<u64>,
    pub walreceiver_last_error: Option<String>,
    pub walreceiver_connect_attempts: Option<u64>,
    /// While the receiver waits to retry: when it tries next, microseconds since the Unix epoch.
    pub walreceiver_next_attempt_ts: Option<u64>,
    /// The upload queue, with remote storage.
    pub upload_queue: Option<crate::remote_storage::upload_queue::QueueStatus>,
    /// The WAL archive of the timeline.
    pub wal_archive: Option<crate::wal_archive::ArchiveStatus>,
    /// Set while a recovery writes into the timeline, or after one failed (reads are refused).
    pub recovery: Option<crate::repository::metadata::RecoveryMark>,
    /// Set while ingest is stopped by a full disk: "disk full: <the last error>".
    pub ingest_stalled: Option<String>,
}

impl TimelineInfo {
    pub fn of(tl: &Timeline) -> TimelineInfo {
        let meta = tl.metadata();
        let ancestor = tl.ancestor();
        let cutoff = tl.gc_cutoff();
        let recovery = tl
            .recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TimelineInfo {
            tenant_id: tl.tenant_id,
            timeline_id: tl.timeline_id,
            ancestor_timeline_id: ancestor.map(|(id, _)| id),
            ancestor_lsn: ancestor.map(|(_, lsn)| lsn),
            last_record_lsn: tl.last_record_lsn(),
            prev_record_lsn: tl.prev_record_lsn(),
            disk_consistent_lsn: tl.disk_consistent_lsn(),
            remote_consistent_lsn: tl.remote_consistent_lsn().unwrap_or(Lsn(0)),
            remote_consistent_lsn_visible: tl.remote_consistent_lsn().unwrap_or(Lsn(0)),
            applied_gc_cutoff_lsn: cutoff,
            min_readable_lsn: cutoff.max(ancestor.map_or(Lsn(0), |(_, lsn)| lsn).min(cutoff)),
            initdb_lsn: meta.initdb_lsn,
            pg_version: meta.pg_version,
            state: match &recovery {
                None => "Active",
                Some(m) if m.state == "running" => "Recovering",
                Some(_) => "Broken",
            },
            wal_source_connstr: None,
            current_physical_size: tl.physical_size(),
            is_archived: false,
            walreceiver_status: None,
            last_received_msg_lsn: None,
            last_received_msg_ts: None,
            walreceiver_last_error: None,
            walreceiver_connect_attempts: None,
            walreceiver_next_attempt_ts: None,
            upload_queue: tl.upload_queue.as_ref().map(|q| q.status()),
            wal_archive: tl.wal_archive.as_ref().map(|a| a.status()),
            recovery,
            ingest_stalled: tl.disk_full.state(),
        }
    }

    /// With the WAL source and receiver state of the timeline, if it has one.
    pub fn with_receiver(
        mut self,
        receiver: Option<(
            crate::walreceiver::receiver::WalSource,
            crate::walreceiver::receiver::ReceiverState,
        )>,
    ) -> TimelineInfo {
        if let Some((source, state)) = receiver {
            self.wal_source_connstr = Some(crate::walreceiver::connstr::redacted(&source.connstr));
            self.walreceiver_status = Some(state.status);
            self.last_received_msg_lsn = state.last_received_msg_lsn;
            self.last_received_msg_ts = state.last_received_msg_ts;
            self.walreceiver_last_error = state.last_error;
            self.walreceiver_connect_attempts = Some(state.connect_attempts);
            self.walreceiver_next_attempt_ts = state.next_attempt_ts;
        }
        self
    }
}

/// POST /v1/timeline: follow a primary (slot, base backup, streaming).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowRequest {
    pub new_timeline_id: TimelineId,
    pub wal_source: crate::walreceiver::receiver::WalSource,
    /// The version the primary must be (the timeline takes the primary's).
    #[serde(default)]
    pub pg_version: Option<u32>,
}

/// POST /v1/timeline: a branch of an existing timeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRequest {
    pub new_timeline_id: TimelineId,
    pub ancestor_timeline_id: TimelineId,
    #[serde(default)]
    pub ancestor_start_lsn: Option<Lsn>,
    /// Accepted for compatibility with Neon's clients; a branch has its ancestor's version.
    #[serde(default)]
    #[allow(dead_code)]
    pub pg_version: Option<u32>,
    /// Accepted for compatibility; timelines here are always writable by their WAL source.
    #[serde(default)]
    #[allow(dead_code)]
    pub read_only: Option<bool>,
}

/// POST /v1/timeline: a new timeline bootstrapped with initdb.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    pub new_timeline_id: TimelineId,
    #[serde(default)]
    pub pg_version: Option<u32>,
}

/// PUT /v1/tenant/:tenant_id/location_config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub mode: LocationMode,
    /// The generation of this attachment (with remote storage); absent: one above every generation found in
    /// remote storage.
    #[serde(default)]
    pub generation: Option<u32>,
    /// Accepted for compatibility; secondary locations are not supported.
    #[serde(default)]
    #[allow(dead_code)]
    pub secondary_conf: Option<serde_json::Value>,
    #[serde(default)]
    pub shard_number: u8,
    #[serde(default)]
    pub shard_count: u8,
    #[serde(default)]
    #[allow(dead_code)]
    pub shard_stripe_size: u32,
    pub tenant_conf: TenantConfigOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LocationMode {
    AttachedSingle,
    Detached,
    AttachedMulti,
    AttachedStale,
    Secondary,
}

#[derive(Debug, Serialize)]
pub struct ShardLocation {
    pub shard_id: TenantId,
    pub node_id: u64,
}

#[derive(Debug, Serialize)]
pub struct LocationConfigResponse {
    pub shards: Vec<ShardLocation>,
    pub stripe_size: u32,
}

/// PUT .../do_gc.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    #[serde(default)]
    pub gc_horizon: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub kind: &'static str,
    pub layer_file_name: String,
    pub layer_file_size: u64,
    pub lsn_start: Lsn,
    pub lsn_end: Lsn,
    pub l0: bool,
}

#[derive(Debug, Serialize)]
pub struct InMemoryLayerInfo {
    pub kind: &'static str,
    pub lsn_start: Lsn,
    pub lsn_end: Option<Lsn>,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct LayerMapInfo {
    pub in_memory_layers: Vec<InMemoryLayerInfo>,
    pub historic_layers: Vec<LayerInfo>,
}
