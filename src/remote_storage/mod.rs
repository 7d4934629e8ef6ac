//! Remote storage: the object store that holds layers, indexes and the WAL archive, so that the local workdir
//! is only a cache (docs/remote-storage.md).
//!
//! One set of operations, S3's semantics, on three backends: a local directory ([`local::LocalFs`]), S3 and
//! S3-compatible servers ([`s3::S3Bucket`]) and Azure Blob Storage ([`azure::AzureBlob`]). [`GenericRemoteStorage`]
//! dispatches to one of them and adds what every backend shares: the `prefix_in_bucket` (a storage only ever
//! sees keys below its own `prefix/`), a concurrency limit (one semaphore for reads, one for writes), and a
//! timeout per request (`timeout`, `small_timeout` for listing, head, delete and small downloads).
//!
//! Semantics, the same on every backend (the conformance tests in `tests/remote_storage.rs` hold them to it):
//! - keys are relative `/`-separated paths ([`RemotePath`]); listing is by string prefix, in byte order, with or
//!   without `/` as delimiter (with it, deeper keys fold into common prefixes), in pages of at most `max_keys`
//!   with a continuation token;
//! - an upload is given its length up front and either makes the whole object visible or nothing; a later
//!   upload to the same key replaces it whole;
//! - a download reads the whole object or a byte range `start..end` (end exclusive, clamped to the size);
//! - deleting a missing key succeeds; head and download of a missing key give [`RemoteError::NotFound`].
//!
//! Errors are sorted into what a retry may cure ([`RemoteError::is_transient`]: 5xx, throttling, timeouts,
//! resets) and what it cannot (auth, a missing bucket, bad input): the upload queue retries the first kind
//! forever and reports the second.

pub mod azure;
pub mod deletion_queue;
pub mod index;
pub mod local;
pub mod retry;
pub mod s3;
pub mod unreliable;
pub mod upload_queue;

use std::fmt;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RemoteStorageConfig, RemoteStorageKind};

/// Keys in one listing page when the caller does not say: S3's own maximum.
pub const DEFAULT_MAX_KEYS_PER_LIST: u32 = 1000;

/// A body streamed to or from remote storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Credentials given in code rather than found in the environment (tests, tools).
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key: String,
    pub secret_key: String,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// A key relative to the storage's root: non-empty `/`-separated components, none empty, `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn new(path: impl Into<String>) -> Result<RemotePath, RemoteError> {
        let path = path.into();
        let bad = path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || path.contains('\0');
        if bad {
            return Err(RemoteError::BadInput(format!(
                "{path:?} is not a relative key of non-empty components"
            )));
        }
        Ok(RemotePath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/child`.
    pub fn join(&self, child: &str) -> Result<RemotePath, RemoteError> {
        RemotePath::new(format!("{}/{child}", self.0))
    }

    /// The last component.
    pub fn object_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListingMode {
    /// Keys one level below the prefix; deeper keys fold into common prefixes ending in `/`.
    WithDelimiter,
    /// Every key that starts with the prefix.
    NoDelimiter,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingObject {
    pub key: RemotePath,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// One page of a listing, or all of them concatenated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Common prefixes (with a delimiter only), without the trailing `/`.
    pub prefixes: Vec<RemotePath>,
    pub keys: Vec<ListingObject>,
}

/// A byte range of an object: `start..end`, end exclusive, `None` for "to the end".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    pub const ALL: ByteRange = ByteRange {
        start: 0,
        end: None,
    };

    fn is_all(&self) -> bool {
        self.start == 0 && self.end.is_none()
    }

    fn check(&self) -> Result<(), RemoteError> {
        match self.end {
            Some(end) if end <= self.start => Err(RemoteError::BadInput(format!(
                "empty byte range {}..{end}",
                self.start
            ))),
            _ => Ok(()),
        }
    }

    /// The HTTP `Range` header value (inclusive end), or none for the whole object.
    fn http_header(&self) -> Option<String> {
        if self.is_all() {
            return None;
        }
        Some(match self.end {
            Some(end) => format!("bytes={}-{}", self.start, end - 1),
            None => format!("bytes={}-", self.start),
        })
    }
}

pub struct Download {
    pub body: ByteStream,
}

impl Download {
    /// The whole body in memory.
    pub async fn collect(mut self) -> Result<Bytes, RemoteError> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.body.next().await {
            out.extend_from_slice(&chunk.map_err(RemoteError::from_body_io)?);
        }
        Ok(out.freeze())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}: no such object")]
    NotFound(RemotePath),
    #[error("bad request: {0}")]
    BadInput(String),
    #[error("remote storage request timed out after {0:?}")]
    Timeout(Duration),
    #[error("remote storage request cancelled")]
    Cancelled,
    /// An error a retry cannot cure: denied credentials, a missing bucket or container, a refused request.
    #[error("remote storage refused the request: {0}")]
    Permanent(String),
    /// An error a retry may cure: 5xx, throttling, a reset or refused connection, a body cut short.
    #[error("remote storage request failed: {0}")]
    Transient(String),
}

impl RemoteError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Timeout(_) | RemoteError::Transient(_))
    }

    /// A body stream error: our own timeout or missing object if it carries one, else a cut connection.
    pub(crate) fn from_body_io(e: std::io::Error) -> RemoteError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RemoteError>())
        {
            Some(inner) => inner.clone(),
            None => RemoteError::Transient(format!("reading the body: {e}")),
        }
    }

    /// Short kind label for metrics and timeline detail.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::NotFound(_) => "not_found",
            RemoteError::BadInput(_) => "bad_input",
            RemoteError::Timeout(_) => "timeout",
            RemoteError::Cancelled => "cancelled",
            RemoteError::Permanent(_) => "permanent",
            RemoteError::Transient(_) => "transient",
        }
    }
}

/// The kinds of request, for concurrency limits, timeouts and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    List,
    Head,
    Get,
    Put,
    Delete,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::List => "list",
            RequestKind::Head => "head",
            RequestKind::Get => "get",
            RequestKind::Put => "put",
            RequestKind::Delete => "delete",
        }
    }
}

/// What each backend implements: keys are already full (the storage prefix applied), limits and timeouts are
/// applied around these calls by [`GenericRemoteStorage`].
pub(crate) trait Backend: Send + Sync {
    /// One listing page of keys starting with `prefix` (a full key prefix, possibly empty), after
    /// `continuation` if given; returns full keys and the token for the next page, if any.
    fn list_page(
        &self,
        prefix: &str,
        mode: ListingMode,
        max_keys: NonZeroU32,
        continuation: Option<String>,
    ) -> impl Future<Output = Result<(RawListing, Option<String>), RemoteError>> + Send;

    fn upload(
        &self,
        body: ByteStream,
        len: u64,
        key: &str,
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;

    /// The body of `key` in `range`; errors while it streams are `io::Error`s wrapping a [`RemoteError`]
    /// or the transport's error.
    fn download(
        &self,
        key: &str,
        range: ByteRange,
    ) -> impl Future<Output = Result<ByteStream, RemoteError>> + Send;

    fn head(&self, key: &str) -> impl Future<Output = Result<RawObject, RemoteError>> + Send;

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), RemoteError>> + Send;

    /// Deletes up to [`Backend::max_keys_per_delete`] keys; missing ones are no error.
    fn delete_objects(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<(), RemoteError>> + Send;

    fn max_keys_per_delete(&self) -> usize;
}

/// A listing page as a backend returns it: full keys.
#[derive(Debug, Default)]
pub(crate) struct RawListing {
    pub prefixes: Vec<String>,
    pub keys: Vec<RawObject>,
}

#[derive(Debug, Clone)]
pub(crate) struct RawObject {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

enum AnyBackend {
    Local(local::LocalFs),
    S3(s3::S3Bucket),
    Azure(azure::AzureBlob),
}

/// A future of `$body` (a call that returns a future) with `$b` bound to the concrete backend.
macro_rules! dispatch {
    ($self:expr, $b:ident => $body:expr) => {
        async {
            match &$self.backend {
                AnyBackend::Local($b) => $body.await,
                AnyBackend::S3($b) => $body.await,
                AnyBackend::Azure($b) => $body.await,
            }
        }
    };
}

struct Inner {
    backend: AnyBackend,
    /// Prepended to every key, with a `/`; empty for none.
    prefix: String,
    read_permits: Arc<Semaphore>,
    write_permits: Arc<Semaphore>,
    timeout: Duration,
    small_timeout: Duration,
    max_keys_per_list: NonZeroU32,
    faults: Option<unreliable::Faults>,
}

/// A remote storage, shared by every tenant of the node; cheap to clone.
#[derive(Clone)]
pub struct GenericRemoteStorage {
    inner: Arc<Inner>,
}

impl fmt::Debug for GenericRemoteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.backend {
            AnyBackend::Local(_) => "local",
            AnyBackend::S3(_) => "s3",
            AnyBackend::Azure(_) => "azure",
        };
        f.debug_struct("GenericRemoteStorage")
            .field("kind", &kind)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// A configured prefix as keys use it: no leading or trailing `/`.
fn normalize_prefix(prefix: Option<&str>) -> String {
    prefix.unwrap_or("").trim_matches('/').to_string()
}

impl GenericRemoteStorage {
    /// Connects to the configured storage (for S3 and Azure this only builds the client: nothing is sent).
    /// `fault_percent` > 0 makes that share of requests fail on purpose (tests only; see [`unreliable`]).
    /// Credentials come from the environment (see the backends).
    pub async fn from_config(
        config: &RemoteStorageConfig,
        fault_percent: u8,
    ) -> Result<Self, RemoteError> {
        Self::from_config_with(config, fault_percent, None).await
    }

    /// [`from_config`](Self::from_config) with credentials given instead of read from the environment: an
    /// S3 access key and secret, or an Azure account key (`access_key` unused).
    pub async fn from_config_with(
        config: &RemoteStorageConfig,
        fault_percent: u8,
        credentials: Option<StaticCredentials>,
    ) -> Result<Self, RemoteError> {
        let (backend, prefix, limit, max_keys) = match &config.storage {
            RemoteStorageKind::LocalFs(c) => (
                AnyBackend::Local(local::LocalFs::new(&c.local_path)?),
                String::new(),
                local::CONCURRENCY_LIMIT,
                None,
            ),
            RemoteStorageKind::AwsS3(c) => (
                AnyBackend::S3(s3::S3Bucket::new(c, credentials).await?),
                normalize_prefix(c.prefix_in_bucket.as_deref()),
                c.concurrency_limit,
                c.max_keys_per_list_response,
            ),
            RemoteStorageKind::AzureContainer(c) => (
                AnyBackend::Azure(azure::AzureBlob::new(c, credentials)?),
                normalize_prefix(c.prefix_in_container.as_deref()),
                c.concurrency_limit,
                c.max_keys_per_list_response,
            ),
        };
        let limit = limit.max(1);
        let max_keys = max_keys
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::new(DEFAULT_MAX_KEYS_PER_LIST).expect("non-zero"));
        Ok(GenericRemoteStorage {
            inner: Arc::new(Inner {
                backend,
                prefix,
                read_permits: Arc::new(Semaphore::new(limit)),
                write_permits: Arc::new(Semaphore::new(limit)),
                timeout: config.timeout.get(),
                small_timeout: config.small_timeout.get(),
                max_keys_per_list: max_keys,
                faults: (fault_percent > 0).then(|| unreliable::Faults::new(fault_percent)),
            }),
        })
    }

    /// A storage in the local directory `root`, without faults: the WAL archive of a node that has no remote
    /// storage lives in its workdir this way, in the same layout.
    pub fn local(root: &std::path::Path) -> Result<Self, RemoteError> {
        let max_keys = NonZeroU32::new(DEFAULT_MAX_KEYS_PER_LIST).expect("non-zero");
        Ok(GenericRemoteStorage {
            inner: Arc::new(Inner {
                backend: AnyBackend::Local(local::LocalFs::new(root)?),
                prefix: String::new(),
                read_permits: Arc::new(Semaphore::new(local::CONCURRENCY_LIMIT)),
                write_permits: Arc::new(Semaphore::new(local::CONCURRENCY_LIMIT)),
                timeout: Duration::from_secs(120),
                small_timeout: Duration::from_secs(30),
                max_keys_per_list: max_keys,
                faults: None,
            }),
        })
    }

    fn full_key(&self, path: &RemotePath) -> String {
        if self.inner.prefix.is_empty() {
            path.0.clone()
        } else {
            format!("{}/{}", self.inner.prefix, path.0)
        }
    }

    fn full_prefix(&self, prefix: Option<&str>) -> String {
        let p = prefix.unwrap_or("");
        if self.inner.prefix.is_empty() {
            p.to_string()
        } else {
            format!("{}/{p}", self.inner.prefix)
        }
    }

    fn strip(&self, key: &str) -> Result<RemotePath, RemoteError> {
        let rel = if self.inner.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.inner.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .ok_or_else(|| {
                    RemoteError::Transient(format!("listing returned {key:?}, outside the prefix"))
                })?
        };
        RemotePath::new(rel.trim_end_matches('/'))
    }

    async fn permit(&self, kind: RequestKind) -> Result<OwnedSemaphorePermit, RemoteError> {
        let sem = match kind {
            RequestKind::List | RequestKind::Head | RequestKind::Get => &self.inner.read_permits,
            RequestKind::Put | RequestKind::Delete => &self.inner.write_permits,
        };
        sem.clone()
            .acquire_owned()
            .await
            .map_err(|_| RemoteError::Cancelled)
    }

    /// Runs one request: a permit of its kind, then the request under its timeout, with metrics.
    async fn request<T>(
        &self,
        kind: RequestKind,
        small: bool,
        what: &str,
        fut: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<(T, OwnedSemaphorePermit), RemoteError> {
        let permit = self.permit(kind).await?;
        let timeout = if small {
            self.inner.small_timeout
        } else {
            self.inner.timeout
        };
        let started = std::time::Instant::now();
        let result = async {
            let fault = match &self.inner.faults {
                Some(faults) => faults.roll(kind, what),
                None => None,
            };
            if let Some(f) = fault.filter(|f| f.before) {
                return Err(f.error(timeout).await);
            }
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(RemoteError::Timeout(timeout)),
            };
            match fault {
                // The request ran (and may have taken effect); its caller sees a failure anyway.
                Some(f) if r.is_ok() => Err(f.error(timeout).await),
                _ => r,
            }
        }
        .await;
        crate::metrics::remote_request(kind, started.elapsed(), result.as_ref().err());
        result.map(|v| (v, permit))
    }

    /// One page of the keys starting with `prefix` (a string prefix of keys: `a/b` also matches `a/bc`),
    /// after `continuation` (the token of the previous page).
    pub async fn list_page(
        &self,
        prefix: Option<&str>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        continuation: Option<String>,
    ) -> Result<(Listing, Option<String>), RemoteError> {
        let full = self.full_prefix(prefix);
        let max_keys = max_keys.unwrap_or(self.inner.max_keys_per_list);
        let ((raw, next), _permit) = self
            .request(
                RequestKind::List,
                true,
                &full,
                dispatch!(self.inner, b => b.list_page(&full, mode, max_keys, continuation)),
            )
            .await?;
        let mut listing = Listing::default();
        for p in raw.prefixes {
            listing.prefixes.push(self.strip(&p)?);
        }
        for o in raw.keys {
            listing.keys.push(ListingObject {
                key: self.strip(&o.key)?,
                size: o.size,
                last_modified: o.last_modified,
            });
        }
        Ok((listing, next))
    }

    /// Every page of [`list_page`](Self::list_page), concatenated.
    pub async fn list(
        &self,
        prefix: Option<&str>,
        mode: ListingMode,
    ) -> Result<Listing, RemoteError> {
        let mut all = Listing::default();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(prefix, mode, None, token).await?;
            all.prefixes.extend(page.prefixes);
            all.keys.extend(page.keys);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Uploads `len` bytes from `body` to `to`, replacing any object there. The body must hold exactly `len`
    /// bytes; if it does not, nothing becomes visible.
    pub async fn upload(
        &self,
        body: ByteStream,
        len: u64,
        to: &RemotePath,
    ) -> Result<(), RemoteError> {
        let key = self.full_key(to);
        let small = len <= SMALL_OBJECT;
        let ((), _permit) = self
            .request(
                RequestKind::Put,
                small,
                &key,
                dispatch!(self.inner, b => b.upload(body, len, &key)),
            )
            .await?;
        crate::metrics::remote_bytes(RequestKind::Put, len);
        Ok(())
    }

    pub async fn upload_bytes(&self, data: Bytes, to: &RemotePath) -> Result<(), RemoteError> {
        let len = data.len() as u64;
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(data) }));
        self.upload(body, len, to).await
    }

    /// Streams `range` of `from`. The permit and the timeout cover the body too: a body not read within the
    /// timeout ends with a timeout error.
    pub async fn download(
        &self,
        from: &RemotePath,
        range: ByteRange,
    ) -> Result<Download, RemoteError> {
        range.check()?;
        let key = self.full_key(from);
        let timeout = self.inner.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (body, permit) = self
            .request(
                RequestKind::Get,
                false,
                &key,
                dispatch!(self.inner, b => b.download(&key, range)),
            )
            .await
            .map_err(|e| match e {
                RemoteError::NotFound(_) => RemoteError::NotFound(from.clone()),
                e => e,
            })?;
        Ok(Download {
            body: Box::pin(DeadlineStream {
                inner: body,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                timeout,
                _permit: permit,
                done: false,
            }),
        })
    }

    /// The whole of `range` of `from` in memory.
    pub async fn download_bytes(
        &self,
        from: &RemotePath,
        range: ByteRange,
    ) -> Result<Bytes, RemoteError> {
        let data = self.download(from, range).await?.collect().await?;
        crate::metrics::remote_bytes(RequestKind::Get, data.len() as u64);
        Ok(data)
    }

    pub async fn head(&self, path: &RemotePath) -> Result<ListingObject, RemoteError> {
        let key = self.full_key(path);
        let (raw, _permit) = self
            .request(
                RequestKind::Head,
                true,
                &key,
                dispatch!(self.inner, b => b.head(&key)),
            )
            .await
            .map_err(|e| match e {
                RemoteError::NotFound(_) => RemoteError::NotFound(path.clone()),
                e => e,
            })?;
        Ok(ListingObject {
            key: path.clone(),
            size: raw.size,
            last_modified: raw.last_modified,
        })
    }

    /// Deletes `path`; a missing object is no error.
    pub async fn delete(&self, path: &RemotePath) -> Result<(), RemoteError> {
        let key = self.full_key(path);
        let ((), _permit) = self
            .request(
                RequestKind::Delete,
                true,
                &key,
                dispatch!(self.inner, b => b.delete(&key)),
            )
            .await?;
        Ok(())
    }

    /// Deletes every one of `paths`, in batches of what the backend takes at once.
    pub async fn delete_objects(&self, paths: &[RemotePath]) -> Result<(), RemoteError> {
        let keys: Vec<String> = paths.iter().map(|p| self.full_key(p)).collect();
        let batch = match &self.inner.backend {
            AnyBackend::Local(b) => b.max_keys_per_delete(),
            AnyBackend::S3(b) => b.max_keys_per_delete(),
            AnyBackend::Azure(b) => b.max_keys_per_delete(),
        }
        .max(1);
        for chunk in keys.chunks(batch) {
            let ((), _permit) = self
                .request(
                    RequestKind::Delete,
                    true,
                    &chunk[0],
                    dispatch!(self.inner, b => b.delete_objects(chunk)),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes every key under `prefix` (a string prefix).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), RemoteError> {
        let listing = self.list(Some(prefix), ListingMode::NoDelimiter).await?;
        let keys: Vec<RemotePath> = listing.keys.into_iter().map(|o| o.key).collect();
        self.delete_objects(&keys).await
    }
}

/// Objects up to this size use `small_timeout`.
const SMALL_OBJECT: u64 = 1 << 20;

/// A download body that fails with a timeout once its deadline passes, and holds the request's permit.
struct DeadlineStream {
    inner: ByteStream,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
    done: bool,
}

impl Stream for DeadlineStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.as_mut().poll_next(cx) {
            if item.is_none() {
                self.done = true;
            }
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            let err = RemoteError::Timeout(self.timeout);
            return Poll::Ready(Some(Err(std::io::Error::other(err))));
        }
        Poll::Pending
    }
}

/// Reads `body` into buffers of `part` bytes (the last one shorter), checking that it holds exactly `len`
/// bytes; `on_part` gets each buffer in order. Shared by the multipart uploads of S3 and Azure.
pub(crate) async fn for_each_part<F, Fut>(
    mut body: ByteStream,
    len: u64,
    part: usize,
    mut on_part: F,
) -> Result<(), RemoteError>
where
    F: FnMut(usize, Bytes) -> Fut,
    Fut: Future<Output = Result<(), RemoteError>>,
{
    let mut buf = bytes::BytesMut::with_capacity(part.min(len as usize));
    let mut seen = 0u64;
    let mut index = 0;
    loop {
        let chunk = body.next().await;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            let chunk =
                chunk.map_err(|e| RemoteError::BadInput(format!("reading the upload: {e}")))?;
            seen += chunk.len() as u64;
            if seen > len {
                return Err(RemoteError::BadInput(format!(
                    "the upload body is longer than the {len} bytes given"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        while buf.len() >= part || (end && !buf.is_empty()) {
            let take = buf.len().min(part);
            let data = buf.split_to(take).freeze();
            on_part(index, data).await?;
            index += 1;
        }
        if end {
            break;
        }
    }
    if seen != len {
        return Err(RemoteError::BadInput(format!(
            "the upload body has {seen} bytes, not the {len} given"
        )));
    }
    if index == 0 {
        on_part(0, Bytes::new()).await?;
    }
    Ok(())
}

/// The whole of a body of known length in memory, checked against it.
pub(crate) async fn collect_body(body: ByteStream, len: u64) -> Result<Bytes, RemoteError> {
    let mut out = bytes::BytesMut::new();
    for_each_part(body, len, usize::MAX, |_, data| {
        out.extend_from_slice(&data);
        async { Ok(()) }
    })
    .await?;
    Ok(out.freeze())
}

/// Pages a sorted list of full keys as S3's ListObjectsV2 does: keys starting with `prefix`, after `after`
/// (the continuation token: the last key or common prefix of the previous page), with a delimiter folding
/// deeper keys into common prefixes. Used by the local backend.
pub(crate) fn page_sorted(
    sorted: &[RawObject],
    prefix: &str,
    mode: ListingMode,
    max_keys: NonZeroU32,
    after: Option<&str>,
) -> (RawListing, Option<String>) {
    let mut out = RawListing::default();
    let mut count = 0u32;
    let mut last: Option<String> = None;
    let start = match after {
        Some(a) => sorted.partition_point(|o| o.key.as_str() <= a),
        None => sorted.partition_point(|o| o.key.as_str() < prefix),
    };
    let mut i = start;
    while i < sorted.len() {
        let o = &sorted[i];
        if !o.key.starts_with(prefix) {
            break;
        }
        if count == max_keys.get() {
            return (out, last);
        }
        let rest = &o.key[prefix.len()..];
        match (mode, rest.find('/')) {
            (ListingMode::WithDelimiter, Some(slash)) => {
                let common = format!("{prefix}{}", &rest[..=slash]);
                // Skip every key under this common prefix: the token is the prefix itself, and
                // "<prefix>/" sorts before all of them but after anything that does not start with it.
                while i < sorted.len() && sorted[i].key.starts_with(&common) {
                    i += 1;
                }
                // Resume after the last key below the common prefix.
                last = Some(sorted[i - 1].key.clone());
                out.prefixes.push(common);
            }
            _ => {
                out.keys.push(o.clone());
                last = Some(o.key.clone());
                i += 1;
            }
        }
        count += 1;
    }
    (out, None)
}

#[cfg(test)]
mod tests;
