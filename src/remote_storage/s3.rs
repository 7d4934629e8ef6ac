//! S3 and S3-compatible servers through the official SDK. With `endpoint` set, requests go there with path-style
//! addressing (`http://host:port/bucket/key`), as MinIO, SeaweedFS and moto expect. Credentials come from the
//! SDK's default chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, web identity, ECS/EC2.
//!
//! The SDK's own retries are off (one attempt per request): retries with backoff happen one level up, where the
//! upload queue decides what may be retried. Objects up to [`PART_SIZE`] are one PutObject; larger ones are a
//! multipart upload of [`PART_SIZE`] parts, aborted if any part fails, so a failed upload leaves nothing visible.

use std::num::NonZeroU32;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use super::{
    Backend, ByteRange, ByteStream, ListingMode, RawListing, RawObject, RemoteError, RemotePath,
    collect_body, for_each_part,
};
use crate::config::S3Config;

/// Part size of multipart uploads (S3's smallest allowed is 5 MiB, all parts but the last).
pub const PART_SIZE: usize = 8 << 20;

pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Bucket {
    pub async fn new(
        config: &S3Config,
        credentials: Option<super::StaticCredentials>,
    ) -> Result<S3Bucket, RemoteError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.bucket_region.clone()));
        if let Some(c) = credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key,
                c.secret_key,
                None,
                None,
                "pageserver",
            ));
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            // Checksums only where S3 requires them: S3-compatible servers vary in what they accept.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Bucket {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket_name.clone(),
        })
    }

    async fn put_multipart(
        &self,
        body: ByteStream,
        len: u64,
        key: &str,
    ) -> Result<(), RemoteError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, key))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                RemoteError::Transient("CreateMultipartUpload gave no upload id".into())
            })?
            .to_string();
        let parts = std::sync::Mutex::new(Vec::new());
        let parts_ref = &parts;
        let result = for_each_part(body, len, PART_SIZE, |index, data| {
            let number = index as i32 + 1;
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(data.len() as i64)
                .body(SdkByteStream::from(data));
            async move {
                let out = req.send().await.map_err(|e| classify(e, key))?;
                parts_ref.lock().unwrap_or_else(|p| p.into_inner()).push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
                Ok(())
            }
        })
        .await;
        let result = match result {
            Ok(()) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.into_inner().unwrap_or_else(|p| p.into_inner())))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(e, key)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Best effort: an upload left open is invisible, and bucket lifecycle rules clean up the rest.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// Sorts an SDK error into ours: what a retry may cure (5xx, throttling, timeouts, cut connections) and what
/// it cannot (auth, a missing bucket, other 4xx).
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    key: &str,
) -> RemoteError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    match &err {
        SdkError::ConstructionFailure(_) => {
            RemoteError::BadInput(format!("{key}: {}", describe(&err)))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            RemoteError::Transient(format!("{key}: {}", describe(&err)))
        }
        _ => {
            let msg = format!(
                "{key}: {} (HTTP {})",
                code.as_deref().unwrap_or("error"),
                status.map_or("?".into(), |s| s.to_string())
            );
            match (status, code.as_deref()) {
                (_, Some("NoSuchKey")) | (Some(404), None | Some("NotFound")) => {
                    RemoteError::NotFound(RemotePath(key.to_string()))
                }
                (Some(s), _) if s >= 500 || s == 429 => RemoteError::Transient(msg),
                (_, Some("SlowDown" | "RequestTimeout" | "Throttling" | "InternalError")) => {
                    RemoteError::Transient(msg)
                }
                _ => RemoteError::Permanent(msg),
            }
        }
    }
}

/// The error and its sources on one line.
fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn modified(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<std::time::SystemTime> {
    t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
}

impl Backend for S3Bucket {
    async fn list_page(
        &self,
        prefix: &str,
        mode: ListingMode,
        max_keys: NonZeroU32,
        continuation: Option<String>,
    ) -> Result<(RawListing, Option<String>), RemoteError> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(max_keys.get().min(i32::MAX as u32) as i32)
            .set_continuation_token(continuation);
        if !prefix.is_empty() {
            req = req.prefix(prefix);
        }
        if mode == ListingMode::WithDelimiter {
            req = req.delimiter("/");
        }
        let out = req.send().await.map_err(|e| classify(e, prefix))?;
        let mut listing = RawListing::default();
        for p in out.common_prefixes() {
            if let Some(p) = p.prefix() {
                listing.prefixes.push(p.to_string());
            }
        }
        for o in out.contents() {
            if let Some(key) = o.key() {
                listing.keys.push(RawObject {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: modified(o.last_modified()),
                });
            }
        }
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok((listing, next))
    }

    async fn upload(&self, body: ByteStream, len: u64, key: &str) -> Result<(), RemoteError> {
        if len > PART_SIZE as u64 {
            return self.put_multipart(body, len, key).await;
        }
        let data: Bytes = collect_body(body, len).await?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify(e, key))?;
        Ok(())
    }

    async fn download(&self, key: &str, range: ByteRange) -> Result<ByteStream, RemoteError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.http_header())
            .send()
            .await
            .map_err(|e| match classify(e, key) {
                // 416: the range starts at or past the end.
                RemoteError::Permanent(m) if m.contains("HTTP 416") => RemoteError::BadInput(m),
                e => e,
            })?;
        let body = out.body;
        let stream = futures::stream::unfold(Some(body), |body| async move {
            let mut body = body?;
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(describe(&e))), None)),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<RawObject, RemoteError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, key))?;
        Ok(RawObject {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: modified(out.last_modified()),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, key))?;
        Ok(())
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<(), RemoteError> {
        let mut objects = Vec::with_capacity(keys.len());
        for k in keys {
            objects.push(
                ObjectIdentifier::builder()
                    .key(k)
                    .build()
                    .map_err(|e| RemoteError::BadInput(e.to_string()))?,
            );
        }
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| RemoteError::BadInput(e.to_string()))?;
        let first = keys.first().map_or("", String::as_str);
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| classify(e, first))?;
        if let Some(e) = out.errors().first() {
            return Err(RemoteError::Transient(format!(
                "DeleteObjects: {}: {} {}",
                e.key().unwrap_or("?"),
                e.code().unwrap_or("error"),
                e.message().unwrap_or("")
            )));
        }
        Ok(())
    }

    fn max_keys_per_delete(&self) -> usize {
        1000
    }
}
