//! The jobs of a tenant: recoveries and scrubs, their progress and result, kept in memory while the tenant is
//! attached (the newest [`MAX_FINISHED`] finished ones are kept).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;

const MAX_FINISHED: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Recover,
    Scrub,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    pub job_id: String,
    pub kind: JobKind,
    /// "running", "done" or "failed".
    pub state: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// The recovery's target, or the scrub's other timeline.
    pub target_timeline_id: Option<TimelineId>,
    pub from_lsn: Option<Lsn>,
    pub to_lsn: Option<Lsn>,
    pub to_time: Option<String>,
    /// Recovery: where the target's replay is (the end of its last record). Scrub: the LSN compared.
    pub lsn_reached: Option<Lsn>,
    /// Recovery: the WAL span replayed so far (from the start LSN to `lsn_reached`).
    pub bytes_replayed: u64,
    pub records_replayed: u64,
    pub segments_replayed: u64,
    /// Bytes of WAL replayed per second of the job so far.
    pub rate_bytes_per_sec: f64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub elapsed_secs: f64,
    pub error: Option<String>,
    /// Scrub only: what was compared and what differed.
    pub scrub: Option<super::ScrubResult>,
    /// Periodic scrub jobs say so.
    pub periodic: bool,
}

/// One job: its status, updated by its task.
pub struct Job {
    started: Instant,
    status: Mutex<JobStatus>,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if s.finished_at.is_none() {
            s.elapsed_secs = self.started.elapsed().as_secs_f64();
            if s.elapsed_secs > 0.0 {
                s.rate_bytes_per_sec = s.bytes_replayed as f64 / s.elapsed_secs;
            }
        }
        s
    }

    pub fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Ends the job: done, or failed with the error.
    pub fn finish(&self, result: Result<(), String>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.update(|s| {
            s.elapsed_secs = elapsed;
            if elapsed > 0.0 {
                s.rate_bytes_per_sec = s.bytes_replayed as f64 / elapsed;
            }
            s.finished_at = Some(now_rfc3339());
            match result {
                Ok(()) => s.state = "done".into(),
                Err(e) => {
                    s.state = "failed".into();
                    s.error = Some(e);
                }
            }
        });
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Jobs {
    /// A new running job.
    pub fn add(
        &self,
        kind: JobKind,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        init: impl FnOnce(&mut JobStatus),
    ) -> Arc<Job> {
        let job_id = crate::id::TimelineId::generate().to_string();
        let mut status = JobStatus {
            job_id: job_id.clone(),
            kind,
            state: "running".into(),
            tenant_id,
            timeline_id,
            target_timeline_id: None,
            from_lsn: None,
            to_lsn: None,
            to_time: None,
            lsn_reached: None,
            bytes_replayed: 0,
            records_replayed: 0,
            segments_replayed: 0,
            rate_bytes_per_sec: 0.0,
            started_at: now_rfc3339(),
            finished_at: None,
            elapsed_secs: 0.0,
            error: None,
            scrub: None,
            periodic: false,
        };
        init(&mut status);
        let job = Arc::new(Job {
            started: Instant::now(),
            status: Mutex::new(status),
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let finished: Vec<String> = jobs
            .iter()
            .filter(|(_, j)| j.status().finished_at.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if finished.len() >= MAX_FINISHED {
            // Ids are random: drop the oldest by start time.
            let mut by_age: Vec<(String, String)> = finished
                .iter()
                .map(|id| (jobs[id].status().started_at, id.clone()))
                .collect();
            by_age.sort();
            for (_, id) in by_age.iter().take(finished.len() + 1 - MAX_FINISHED) {
                jobs.remove(id);
            }
        }
        jobs.insert(job_id, job.clone());
        job
    }

    pub fn get(&self, id: &str) -> Option<JobStatus> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(id).map(|j| j.status())
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<JobStatus> = jobs.values().map(|j| j.status()).collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        v
    }

    /// Whether a job is running against `timeline` (as source or target).
    pub fn running_on(&self, timeline: TimelineId) -> bool {
        self.list().iter().any(|j| {
            j.state == "running"
                && (j.timeline_id == timeline || j.target_timeline_id == Some(timeline))
        })
    }
}
