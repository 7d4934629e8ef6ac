//! GET /metrics: the histograms of crate::metrics and gauges of every tenant and timeline.

use std::fmt::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::routes::{HandlerResult, RequestContext};
use crate::metrics::HISTOGRAMS;
use crate::repository::tasks::plan::is_l0;

pub async fn handler(ctx: RequestContext) -> HandlerResult {
    let mut out = String::new();
    for h in HISTOGRAMS {
        h.encode(&mut out);
    }
    let tenants = ctx.state.mgr.list().await;
    let (hits, misses) = ctx.state.mgr.page_cache().stats();
    let _ = writeln!(
        out,
        "# TYPE pageserver_page_cache_hits_total counter\npageserver_page_cache_hits_total {hits}"
    );
    let _ = writeln!(
        out,
        "# TYPE pageserver_page_cache_misses_total counter\npageserver_page_cache_misses_total {misses}"
    );
    let _ = writeln!(
        out,
        "# TYPE pageserver_tenants gauge\npageserver_tenants {}",
        tenants.len()
    );
    let _ = writeln!(out, "# TYPE pageserver_timeline_last_record_lsn gauge");
    let _ = writeln!(out, "# TYPE pageserver_timeline_disk_consistent_lsn gauge");
    let _ = writeln!(out, "# TYPE pageserver_timeline_physical_size_bytes gauge");
    let _ = writeln!(out, "# TYPE pageserver_timeline_layers gauge");
    let _ = writeln!(out, "# TYPE pageserver_wal_redo_processes gauge");
    for a in &tenants {
        let t = a.tenant.id;
        let _ = writeln!(
            out,
            "pageserver_wal_redo_processes{{tenant_id=\"{t}\"}} {}",
            a.redo.pool().pids().await.len()
        );
        for tl in a.tenant.timelines() {
            let labels = format!("tenant_id=\"{t}\",timeline_id=\"{}\"", tl.timeline_id);
            let _ = writeln!(
                out,
                "pageserver_timeline_last_record_lsn{{{labels}}} {}",
                tl.last_record_lsn().0
            );
            let _ = writeln!(
                out,
                "pageserver_timeline_disk_consistent_lsn{{{labels}}} {}",
                tl.disk_consistent_lsn().0
            );
            let _ = writeln!(
                out,
                "pageserver_timeline_physical_size_bytes{{{labels}}} {}",
                tl.physical_size()
            );
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
                let _ = writeln!(
                    out,
                    "pageserver_timeline_layers{{{labels},kind=\"{kind}\"}} {n}"
                );
            }
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
