//! GET /metrics: the histograms of crate::metrics and gauges of every tenant and timeline, in the Prometheus
//! text format (each metric family's samples in one group, after its HELP and TYPE lines).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::routes::{HandlerResult, RequestContext};
use crate::metrics::{GETPAGE_ERRORS, HISTOGRAMS};
use crate::repository::tasks::plan::is_l0;

/// Metric families filled sample by sample, written out family by family.
struct Families {
    families: Vec<(&'static str, &'static str, &'static str, String)>,
}

impl Families {
    fn new(list: &[(&'static str, &'static str, &'static str)]) -> Families {
        Families {
            families: list
                .iter()
                .map(|(name, kind, help)| (*name, *kind, *help, String::new()))
                .collect(),
        }
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        if let Some((_, _, _, lines)) = self.families.iter_mut().find(|f| f.0 == name) {
            if labels.is_empty() {
                let _ = writeln!(lines, "{name} {value}");
            } else {
                let _ = writeln!(lines, "{name}{{{labels}}} {value}");
            }
        } else {
            debug_assert!(false, "metric {name} is not declared");
        }
    }

    fn encode(&self, out: &mut String) {
        for (name, kind, help, lines) in &self.families {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
        }
    }
}

const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "pageserver_page_cache_hits_total",
        "counter",
        "Page cache hits",
    ),
    (
        "pageserver_page_cache_misses_total",
        "counter",
        "Page cache misses",
    ),
    (
        "pageserver_layer_index_cache_hits_total",
        "counter",
        "Layer index pages found in the index cache",
    ),
    (
        "pageserver_layer_index_cache_misses_total",
        "counter",
        "Layer index pages read from layer files",
    ),
    (
        "pageserver_layer_index_cache_bytes",
        "gauge",
        "Bytes of layer index pages held in memory",
    ),
    (
        "pageserver_getpage_errors_total",
        "counter",
        "GetPage requests answered with an error",
    ),
    (
        "pageserver_page_requests_in_flight",
        "gauge",
        "Page service requests being answered now",
    ),
    ("pageserver_tenants", "gauge", "Attached tenants"),
    (
        "pageserver_wal_redo_processes",
        "gauge",
        "Running WAL redo processes",
    ),
    (
        "pageserver_timeline_last_record_lsn",
        "gauge",
        "End of the last ingested WAL record",
    ),
    (
        "pageserver_timeline_disk_consistent_lsn",
        "gauge",
        "LSN up to which the timeline is durable",
    ),
    (
        "pageserver_timeline_physical_size_bytes",
        "gauge",
        "Size of the timeline's layer files",
    ),
    (
        "pageserver_timeline_remote_consistent_lsn",
        "gauge",
        "disk_consistent_lsn of the newest index uploaded to remote storage",
    ),
    (
        "pageserver_timeline_upload_queue_ops",
        "gauge",
        "Operations in the timeline's upload queue, queued and in flight",
    ),
    (
        "pageserver_timeline_upload_failures_total",
        "counter",
        "Failed attempts of the timeline's upload queue (each retry counts)",
    ),
    (
        "pageserver_timeline_upload_permanent_error",
        "gauge",
        "1 while the last upload failure is one a retry cannot cure (credentials, a missing bucket)",
    ),
    (
        "pageserver_timeline_layers",
        "gauge",
        "Layer files by kind (l0, l1, image)",
    ),
    (
        "pageserver_timeline_ingest_disk_full",
        "gauge",
        "1 while the timeline's ingest is stopped by a full disk (it resumes by itself when space returns)",
    ),
    (
        "pageserver_timelines_ingest_disk_full",
        "gauge",
        "Timelines whose ingest is stopped by a full disk",
    ),
    (
        "pageserver_wal_ingest_lag_bytes",
        "gauge",
        "WAL the source has sent or announced that is not ingested yet",
    ),
    (
        "pageserver_wal_ingest_bytes_total",
        "counter",
        "WAL bytes ingested since the timeline was loaded",
    ),
    (
        "pageserver_wal_ingest_records_total",
        "counter",
        "WAL records ingested since the timeline was loaded",
    ),
    (
        "pageserver_walreceiver_streaming",
        "gauge",
        "1 while the WAL receiver streams",
    ),
    (
        "pageserver_walreceiver_connect_attempts_total",
        "counter",
        "Connections the WAL receiver has tried",
    ),
];

pub async fn handler(ctx: RequestContext) -> HandlerResult {
    let mut out = String::new();
    for h in HISTOGRAMS {
        h.encode(&mut out);
    }
    crate::metrics::encode_remote(&mut out);
    let mut f = Families::new(FAMILIES);
    let tenants = ctx.state.mgr.list().await;
    let (hits, misses) = ctx.state.mgr.page_cache().stats();
    f.sample("pageserver_page_cache_hits_total", "", hits);
    f.sample("pageserver_page_cache_misses_total", "", misses);
    let (hits, misses, bytes, _) = crate::repository::layers::index_cache::stats();
    f.sample("pageserver_layer_index_cache_hits_total", "", hits);
    f.sample("pageserver_layer_index_cache_misses_total", "", misses);
    f.sample("pageserver_layer_index_cache_bytes", "", bytes);
    let errors = GETPAGE_ERRORS.load(Ordering::Relaxed);
    f.sample("pageserver_getpage_errors_total", "", errors);
    let in_flight = crate::metrics::PAGE_REQUESTS_IN_FLIGHT.load(Ordering::Relaxed);
    f.sample("pageserver_page_requests_in_flight", "", in_flight);
    f.sample("pageserver_tenants", "", tenants.len() as u64);
    let mut disk_full = 0;
    for a in &tenants {
        let t = a.tenant.id;
        let pids = a.redo.pids().await.len() as u64;
        f.sample(
            "pageserver_wal_redo_processes",
            &format!("tenant_id=\"{t}\""),
            pids,
        );
        for tl in a.tenant.timelines() {
            let labels = format!("tenant_id=\"{t}\",timeline_id=\"{}\"", tl.timeline_id);
            let last = tl.last_record_lsn().0;
            f.sample("pageserver_timeline_last_record_lsn", &labels, last);
            let durable = tl.disk_consistent_lsn().0;
            f.sample("pageserver_timeline_disk_consistent_lsn", &labels, durable);
            let size = tl.physical_size();
            f.sample("pageserver_timeline_physical_size_bytes", &labels, size);
            let full = tl.disk_full.state().is_some() as u64;
            f.sample("pageserver_timeline_ingest_disk_full", &labels, full);
            disk_full += full;
            if let Some(q) = &tl.upload_queue {
                let st = q.status();
                let remote = q.remote_consistent_lsn().0;
                f.sample("pageserver_timeline_remote_consistent_lsn", &labels, remote);
                let ops = (st.queued + st.in_flight) as u64;
                f.sample("pageserver_timeline_upload_queue_ops", &labels, ops);
                f.sample(
                    "pageserver_timeline_upload_failures_total",
                    &labels,
                    st.failures,
                );
                let permanent = st.last_error.as_ref().is_some_and(|e| e.permanent) as u64;
                f.sample(
                    "pageserver_timeline_upload_permanent_error",
                    &labels,
                    permanent,
                );
            }
            let (mut l0, mut l1, mut images) = (0, 0, 0);
            for name in tl
                .layers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .historic_names()
            {
                if is_l0(&name) {
                    l0 += 1;
                } else if name.is_delta() {
                    l1 += 1;
                } else {
                    images += 1;
                }
            }
            for (kind, n) in [("l0", l0), ("l1", l1), ("image", images)] {
                let labels = format!("{labels},kind=\"{kind}\"");
                f.sample("pageserver_timeline_layers", &labels, n);
            }
            let records = tl.ingested_records.load(Ordering::Relaxed);
            f.sample("pageserver_wal_ingest_records_total", &labels, records);
            let bytes = tl.ingested_wal_bytes.load(Ordering::Relaxed);
            f.sample("pageserver_wal_ingest_bytes_total", &labels, bytes);
            if let Some((_, r)) = a.wal_sources.get(tl.timeline_id) {
                let lag = r
                    .last_received_msg_lsn
                    .map_or(0, |l| l.0.saturating_sub(last));
                f.sample("pageserver_wal_ingest_lag_bytes", &labels, lag);
                let streaming = u64::from(r.status == "streaming");
                f.sample("pageserver_walreceiver_streaming", &labels, streaming);
                let attempts = r.connect_attempts;
                f.sample(
                    "pageserver_walreceiver_connect_attempts_total",
                    &labels,
                    attempts,
                );
            }
        }
    }
    f.sample("pageserver_timelines_ingest_disk_full", "", disk_full);
    f.encode(&mut out);
    let mut response = Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_and_declared_once() {
        let mut f = Families::new(FAMILIES);
        f.sample("pageserver_tenants", "", 2);
        f.sample(
            "pageserver_timeline_layers",
            "tenant_id=\"a\",kind=\"l0\"",
            1,
        );
        f.sample("pageserver_wal_ingest_lag_bytes", "timeline_id=\"x\"", 7);
        f.sample(
            "pageserver_timeline_layers",
            "tenant_id=\"b\",kind=\"l0\"",
            3,
        );
        let mut out = String::new();
        f.encode(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        let at = |needle: &str| lines.iter().position(|l| *l == needle).unwrap();
        let ty = at("# TYPE pageserver_timeline_layers gauge");
        assert_eq!(
            at("pageserver_timeline_layers{tenant_id=\"a\",kind=\"l0\"} 1"),
            ty + 1
        );
        assert_eq!(
            at("pageserver_timeline_layers{tenant_id=\"b\",kind=\"l0\"} 3"),
            ty + 2
        );
        assert!(at("pageserver_tenants 2") < ty);
        assert_eq!(out.matches("# TYPE ").count(), FAMILIES.len());
    }
}
