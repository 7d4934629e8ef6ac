//! A load tool in the spirit of Neon's pagebench: `get-page-latest-lsn` reads the keyspace of a timeline from
//! the management API (`GET .../keyspace`), keeps the relation blocks, and has N clients, each on its own
//! `pagestream_v3` connection with up to `queue_depth` requests in flight, ask for pages at random keys at the
//! keyspace's LSN for a while. The report: requests, errors, throughput and latency percentiles (from send to
//! answer of each request).

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::page_service::client::{ClientError, PageServiceClient};
use crate::page_service::pagestream::{Request, RequestBody, RequestHeader, ResponseBody, Version};
use crate::pg::Lsn;
use crate::repository::Key;
use crate::walredo::PageId;

#[derive(Debug, thiserror::Error)]
pub enum PagebenchError {
    #[error("management API {url}: {msg}")]
    Mgmt { url: String, msg: String },
    #[error("page service: {0}")]
    PageService(#[from] ClientError),
    #[error("the keyspace has no relation blocks")]
    NoKeys,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// host:port of the page service.
    pub page_service: String,
    pub tenant: String,
    pub timeline: String,
    pub clients: usize,
    pub queue_depth: usize,
    pub runtime: Duration,
    /// Only the first this many relation blocks of the keyspace (a hot set).
    pub limit_keys: Option<u64>,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clients: usize,
    pub queue_depth: usize,
    pub keys: u64,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// The dense keyspace of a timeline and its LSN, from `GET <mgmt>/v1/tenant/<t>/timeline/<tl>/keyspace`.
/// `mgmt` is `http://host:port`.
pub async fn fetch_keyspace(
    mgmt: &str,
    tenant: &str,
    timeline: &str,
) -> Result<(Vec<Range<Key>>, Lsn), PagebenchError> {
    fetch_keyspace_at(mgmt, tenant, timeline, None, None).await
}

/// [`fetch_keyspace`] at `at_lsn` (default the last record), with a bearer token.
pub async fn fetch_keyspace_at(
    mgmt: &str,
    tenant: &str,
    timeline: &str,
    at_lsn: Option<Lsn>,
    token: Option<&str>,
) -> Result<(Vec<Range<Key>>, Lsn), PagebenchError> {
    let mut path = format!("/v1/tenant/{tenant}/timeline/{timeline}/keyspace");
    if let Some(lsn) = at_lsn {
        path.push_str(&format!("?at_lsn={lsn}"));
    }
    let url = format!("{mgmt}{path}");
    let err = |msg: String| PagebenchError::Mgmt {
        url: url.clone(),
        msg,
    };
    #[derive(serde::Deserialize)]
    struct Partitioning {
        keys: Vec<(String, String)>,
        at_lsn: String,
    }
    let p: Partitioning = crate::http::client::get_json(mgmt, &path, token)
        .await
        .map_err(err)?;
    let key = |s: &str| s.parse::<Key>().map_err(|e| err(format!("key {s:?}: {e}")));
    let ranges = p
        .keys
        .iter()
        .map(|(a, b)| Ok(key(a)?..key(b)?))
        .collect::<Result<Vec<_>, PagebenchError>>()?;
    let lsn = p
        .at_lsn
        .parse()
        .map_err(|_| err(format!("at_lsn {:?}", p.at_lsn)))?;
    Ok((ranges, lsn))
}

/// The relation blocks of `ranges` (each range's keys are consecutive block numbers of one fork), as
/// (first key, count), and their total.
pub fn rel_block_runs(ranges: &[Range<Key>], limit: Option<u64>) -> (Vec<(Key, u64)>, u64) {
    let mut runs = Vec::new();
    let mut total = 0u64;
    for r in ranges {
        // A range may span forks and size keys; walk it fork by fork.
        let mut start = r.start;
        while start < r.end {
            if !start.is_rel_block() {
                // Size keys, directories, SLRU blocks: short runs, stepped over one by one.
                start = start.next();
                continue;
            }
            let fork_end = Key {
                field6: u32::MAX,
                ..start
            };
            let end = if r.end < fork_end { r.end } else { fork_end };
            let count = (end.field6 - start.field6) as u64;
            let count = limit.map_or(count, |l| count.min(l.saturating_sub(total)));
            if count > 0 {
                runs.push((start, count));
                total += count;
            }
            if limit.is_some_and(|l| total >= l) {
                return (runs, total);
            }
            start = fork_end.next();
        }
    }
    (runs, total)
}

/// xorshift64*: a small, fast generator for picking keys (not for anything secret).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn pick(runs: &[(Key, u64)], total: u64, rng: &mut Rng) -> Key {
    let mut i = rng.next() % total;
    for (start, count) in runs {
        if i < *count {
            return Key {
                field6: start.field6 + i as u32,
                ..*start
            };
        }
        i -= count;
    }
    runs[0].0
}

/// Runs the load against the page service on the blocks of `ranges` at `lsn`.
pub async fn get_page_latest_lsn(
    load: &Load,
    ranges: &[Range<Key>],
    lsn: Lsn,
) -> Result<Report, PagebenchError> {
    let (runs, total) = rel_block_runs(ranges, load.limit_keys);
    if total == 0 {
        return Err(PagebenchError::NoKeys);
    }
    let started = Instant::now();
    let deadline = started + load.runtime;
    let mut tasks = Vec::new();
    for c in 0..load.clients.max(1) {
        let load = load.clone();
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            client(&load, &runs, total, lsn, deadline, c as u64).await
        }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| ClientError::Unexpected {
            got: "panic",
            during: e.to_string(),
        })??;
        latencies.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64
    };
    Ok(Report {
        clients: load.clients,
        queue_depth: load.queue_depth,
        keys: total,
        requests: latencies.len() as u64,
        errors,
        seconds,
        requests_per_s: latencies.len() as f64 / seconds,
        latency_us: Percentiles {
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            p99_9: pct(0.999),
            max: pct(1.0),
        },
    })
}

/// One client: latencies in µs and the number of Error responses.
async fn client(
    load: &Load,
    runs: &[(Key, u64)],
    total: u64,
    lsn: Lsn,
    deadline: Instant,
    id: u64,
) -> Result<(Vec<u32>, u64), ClientError> {
    let mut rng = Rng(load.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (id + 1) | 1);
    let conn = PageServiceClient::connect(&load.page_service).await?;
    let mut session = conn
        .pagestream(Version::V3, &load.tenant, &load.timeline)
        .await
        .map_err(|(e, _)| e)?;
    let mut inflight: VecDeque<(Request, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut reqid = id << 48;
    let mut next_request = |rng: &mut Rng| {
        reqid += 1;
        let key = pick(runs, total, rng);
        let Some(PageId::Rel(tag)) = key.page_id() else {
            unreachable!("runs hold relation blocks only")
        };
        Request {
            hdr: RequestHeader {
                reqid,
                request_lsn: lsn,
                not_modified_since: lsn,
            },
            body: RequestBody::GetPage {
                rel: tag.rnode,
                fork: tag.forknum,
                blkno: tag.blkno,
            },
        }
    };
    for _ in 0..load.queue_depth.max(1) {
        let req = next_request(&mut rng);
        session.send(&req);
        inflight.push_back((req, Instant::now()));
    }
    session.flush().await?;
    while let Some((req, sent)) = inflight.pop_front() {
        match session.recv(&req).await? {
            ResponseBody::GetPage(_) => latencies.push(sent.elapsed().as_micros() as u32),
            _ => errors += 1,
        }
        if Instant::now() < deadline {
            let req = next_request(&mut rng);
            session.send(&req);
            session.flush().await?;
            inflight.push_back((req, Instant::now()));
        }
    }
    session.terminate().await?;
    Ok((latencies, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::RelFileNode;

    #[test]
    fn runs_keep_relation_blocks_only_and_respect_the_limit() {
        let rel = RelFileNode {
            spc: 1663,
            db: 5,
            rel: 16384,
        };
        let ranges = vec![
            Key::dbdir()..Key::dbdir().next(),
            Key::rel_block(rel, 0, 0)..Key::rel_size(rel, 0).next(),
            Key::rel_block(rel, 2, 0)..Key::rel_block(rel, 2, 3),
        ];
        let ranges = crate::repository::keyspace::KeySpace::from_ranges(ranges).ranges;
        let (runs, total) = rel_block_runs(&ranges, None);
        assert_eq!(total, u32::MAX as u64 + 3);
        assert_eq!(runs[0].0, Key::rel_block(rel, 0, 0));
        let (runs, total) = rel_block_runs(&ranges, Some(10));
        assert_eq!((runs.len(), total), (1, 10));
        let mut rng = Rng(7);
        for _ in 0..1000 {
            assert!(pick(&runs, total, &mut rng).is_rel_block());
        }
    }
}
