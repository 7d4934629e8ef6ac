//! Remote storage speed against one S3 server (SeaweedFS on loopback), in one run:
//! - baseline: the AWS SDK itself (the client the pageserver uses, called directly) PUTs 8 MiB objects, 4 at a
//!   time (the upload queue's layer parallelism and part size), then GETs them back: MB/s each way;
//! - upload during ingest: a pageserver with this remote storage follows a primary through `pgbench -i`;
//!   from the start of the load until `remote_consistent_lsn` reaches its end: layer bytes uploaded per second,
//!   and how long after ingest finished the uploads did;
//! - attach: that pageserver is killed and its workdir dropped; a new one on an empty workdir attaches the
//!   tenant: time to the attach answer, to the first page, and to every layer (a fullbackup reads every page,
//!   downloading each layer it needs), with download MB/s.
//!
//! Report: `<target>/bench-reports/remote_storage.json`. Under `cargo test` (no `--bench`) it runs once on a
//! small load as a smoke test.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::objstore::S3Server;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";
const OBJECT: usize = 8 << 20;
const PARALLEL: usize = 4;

fn lsn_of(v: &Value, field: &str) -> Lsn {
    v[field].as_str().unwrap_or("0/0").parse().unwrap()
}

fn detail(ps: &Pageserver) -> Value {
    ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None)
        .1
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// The SDK alone: `count` objects of 8 MiB, PARALLEL at a time, up then down. Returns (PUT, GET) MB/s.
fn raw_sdk(server: &S3Server, count: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = server.client();
        let body = bytes::Bytes::from(vec![0x5au8; OBJECT]);
        let put = |i: usize| {
            let (client, body, bucket) = (client.clone(), body.clone(), server.bucket.clone());
            async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(format!("raw/{i}"))
                    .content_length(OBJECT as i64)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap();
            }
        };
        let get = |i: usize| {
            let (client, bucket) = (client.clone(), server.bucket.clone());
            async move {
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(format!("raw/{i}"))
                    .send()
                    .await
                    .unwrap();
                let data = out.body.collect().await.unwrap().into_bytes();
                assert_eq!(data.len(), OBJECT);
            }
        };
        use futures::StreamExt;
        let t = Instant::now();
        futures::stream::iter((0..count).map(put))
            .buffer_unordered(PARALLEL)
            .collect::<Vec<()>>()
            .await;
        let put_time = t.elapsed();
        let t = Instant::now();
        futures::stream::iter((0..count).map(get))
            .buffer_unordered(PARALLEL)
            .collect::<Vec<()>>()
            .await;
        let get_time = t.elapsed();
        let bytes = (count * OBJECT) as u64;
        (mb_per_s(bytes, put_time), mb_per_s(bytes, get_time))
    })
}

fn main() {
    let bench = common::is_bench_run();
    let (scale, objects) = if bench { (20, 64) } else { (1, 4) };
    let server = S3Server::start();
    let (raw_put, raw_get) = raw_sdk(&server, objects);

    let mut pg = PgCluster::start(PgOptions {
        extra_conf: vec!["max_wal_size = '2GB'".into()],
    });
    let remote = format!("remote_storage={}", server.remote_storage("bench"));
    let overrides = [remote.as_str()];
    let mut ps = Pageserver::start_with_env(&overrides, server.env());
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");
    let start_lsn = lsn_of(&detail(&ps), "last_record_lsn");
    let uploaded_before = detail(&ps)["upload_queue"]["bytes_uploaded"]
        .as_u64()
        .unwrap_or(0);
    let t = Instant::now();
    pg.pgbench_init("postgres", scale);
    pg.sql("CHECKPOINT");
    let end: Lsn = pg.current_lsn().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut ingested_at = None;
    let info = loop {
        let info = detail(&ps);
        if ingested_at.is_none() && lsn_of(&info, "last_record_lsn") >= end {
            ingested_at = Some(t.elapsed());
        }
        if lsn_of(&info, "remote_consistent_lsn") >= end {
            break info;
        }
        assert!(Instant::now() < deadline, "uploads never caught up: {info}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let uploaded_at = t.elapsed();
    let ingested_at = ingested_at.unwrap_or(uploaded_at);
    let uploaded = info["upload_queue"]["bytes_uploaded"].as_u64().unwrap_or(0) - uploaded_before;
    let upload_rate = mb_per_s(uploaded, uploaded_at);
    let remote_lsn = lsn_of(&info, "remote_consistent_lsn");

    // A new pageserver on an empty workdir.
    ps.kill9();
    let fresh = Pageserver::start_with_env(&overrides, server.env());
    let t = Instant::now();
    fresh.attach(T, None);
    let attached = t.elapsed();
    assert_eq!(fresh.pg_class_page(T, TL), (200, 8192));
    let first_page = t.elapsed();
    let tar = fresh.fullbackup(T, TL, remote_lsn);
    let every_layer = t.elapsed();
    let downloads = fresh.metric("pageserver_layer_downloads_total");
    let downloaded = fresh.metric("pageserver_layer_downloaded_bytes_total");
    let (_, layers) = fresh.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}/layer"), None);
    let layer_count = layers["historic_layers"].as_array().map_or(0, |a| a.len());
    pg.stop();

    common::write_report(
        "remote_storage",
        &json!({
            "server": "SeaweedFS 4.48 (weed mini) on loopback, SigV4",
            "raw_sdk": {
                "objects": objects,
                "object_bytes": OBJECT,
                "parallel": PARALLEL,
                "put_mb_per_s": raw_put,
                "get_mb_per_s": raw_get,
            },
            "upload_during_ingest": {
                "pgbench_scale": scale,
                "wal_bytes": end.0 - start_lsn.0,
                "layer_bytes_uploaded": uploaded,
                "seconds_to_ingested": ingested_at.as_secs_f64(),
                "seconds_to_uploaded": uploaded_at.as_secs_f64(),
                "upload_mb_per_s": upload_rate,
                "ratio_to_raw_put": upload_rate / raw_put,
            },
            "attach": {
                "layers_in_index": layer_count,
                "seconds_to_attached": attached.as_secs_f64(),
                "seconds_to_first_page": first_page.as_secs_f64(),
                "seconds_to_every_layer": every_layer.as_secs_f64(),
                "layers_downloaded": downloads,
                "bytes_downloaded": downloaded,
                "fullbackup_bytes": tar.len(),
                "download_mb_per_s": mb_per_s(downloaded, every_layer),
                "ratio_to_raw_get": mb_per_s(downloaded, every_layer) / raw_get,
            },
        }),
    );
}
