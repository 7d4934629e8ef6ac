//! Azure Blob Storage (and Azurite) through `azure_storage_blobs`, with shared-key credentials: the account is
//! `storage_account`, else `AZURE_STORAGE_ACCOUNT`; the key is `AZURE_STORAGE_ACCESS_KEY`. With `endpoint` set
//! (an emulator, a private endpoint), requests go to that base URL (`http://127.0.0.1:10000/devstoreaccount1`
//! for Azurite); else to `https://<account>.blob.core.windows.net`.
//!
//! Objects up to [`BLOCK_SIZE`] are one Put Blob; larger ones are Put Block of [`BLOCK_SIZE`] blocks, then Put
//! Block List, which makes the blob visible whole. The SDK's retries are off: the upload queue retries.

use std::num::NonZeroU32;

use azure_core::error::ErrorKind;
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::blob::{BlobBlockType, BlockList};
use azure_storage_blobs::prelude::{BlobServiceClient, ClientBuilder, ContainerClient};
use bytes::Bytes;
use futures::StreamExt;

use super::{
    Backend, ByteRange, ByteStream, ListingMode, RawListing, RawObject, RemoteError, RemotePath,
    for_each_part,
};
use crate::config::AzureConfig;

/// Block size of uploads in blocks.
pub const BLOCK_SIZE: usize = 8 << 20;
/// Azure's most results per listing page.
const MAX_LIST_PAGE: u32 = 5000;

pub struct AzureBlob {
    container: ContainerClient,
}

impl AzureBlob {
    pub fn new(
        config: &AzureConfig,
        credentials: Option<super::StaticCredentials>,
    ) -> Result<AzureBlob, RemoteError> {
        let account = match &config.storage_account {
            Some(a) => a.clone(),
            None => std::env::var("AZURE_STORAGE_ACCOUNT").map_err(|_| {
                RemoteError::Permanent(
                    "no Azure storage account: set remote_storage.storage_account or AZURE_STORAGE_ACCOUNT"
                        .into(),
                )
            })?,
        };
        let key = match credentials {
            Some(c) => c.secret_key,
            None => std::env::var("AZURE_STORAGE_ACCESS_KEY").map_err(|_| {
                RemoteError::Permanent("no Azure access key: set AZURE_STORAGE_ACCESS_KEY".into())
            })?,
        };
        let credentials = StorageCredentials::access_key(account.clone(), key);
        let builder = match &config.endpoint {
            Some(uri) => ClientBuilder::with_location(
                CloudLocation::Custom {
                    account,
                    uri: uri.trim_end_matches('/').to_string(),
                },
                credentials,
            ),
            None => ClientBuilder::new(account, credentials),
        };
        let service: BlobServiceClient = builder
            .retry(azure_core::RetryOptions::none())
            .blob_service_client();
        Ok(AzureBlob {
            container: service.container_client(&config.container_name),
        })
    }
}

/// Sorts an SDK error into ours, as for S3: 5xx, 429 and transport errors may pass, other 4xx will not.
fn classify(err: azure_core::Error, key: &str) -> RemoteError {
    match err.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let status = *status as u16;
            let msg = format!(
                "{key}: {} (HTTP {status})",
                error_code.as_deref().unwrap_or("error")
            );
            match (status, error_code.as_deref()) {
                (404, Some("BlobNotFound") | None) => {
                    RemoteError::NotFound(RemotePath(key.to_string()))
                }
                (416, _) => RemoteError::BadInput(msg),
                (s, _) if s >= 500 || s == 429 || s == 408 => RemoteError::Transient(msg),
                _ => RemoteError::Permanent(msg),
            }
        }
        ErrorKind::Credential => RemoteError::Permanent(format!("{key}: {err}")),
        ErrorKind::DataConversion | ErrorKind::MockFramework => {
            RemoteError::Transient(format!("{key}: {err}"))
        }
        ErrorKind::Io | ErrorKind::Other => RemoteError::Transient(format!("{key}: {err}")),
    }
}

fn block_id(index: usize) -> Bytes {
    // Block ids of one blob must all have the same length.
    Bytes::from(format!("{index:08}"))
}

impl Backend for AzureBlob {
    async fn list_page(
        &self,
        prefix: &str,
        mode: ListingMode,
        max_keys: NonZeroU32,
        continuation: Option<String>,
    ) -> Result<(RawListing, Option<String>), RemoteError> {
        let max = NonZeroU32::new(max_keys.get().min(MAX_LIST_PAGE)).unwrap_or(max_keys);
        let mut req = self.container.list_blobs().max_results(max);
        if !prefix.is_empty() {
            req = req.prefix(prefix.to_string());
        }
        if mode == ListingMode::WithDelimiter {
            req = req.delimiter("/");
        }
        if let Some(token) = continuation {
            req = req.marker(azure_core::prelude::NextMarker::new(token));
        }
        let page = req
            .into_stream()
            .next()
            .await
            .ok_or_else(|| RemoteError::Transient("listing returned no page".into()))?
            .map_err(|e| classify(e, prefix))?;
        let mut listing = RawListing::default();
        for p in page.blobs.prefixes() {
            listing.prefixes.push(p.name.clone());
        }
        for b in page.blobs.blobs() {
            listing.keys.push(RawObject {
                key: b.name.clone(),
                size: b.properties.content_length,
                last_modified: Some(b.properties.last_modified.into()),
            });
        }
        let next = page
            .next_marker
            .map(|m| m.as_str().to_string())
            .filter(|m| !m.is_empty());
        Ok((listing, next))
    }

    async fn upload(&self, body: ByteStream, len: u64, key: &str) -> Result<(), RemoteError> {
        let blob = self.container.blob_client(key);
        if len <= BLOCK_SIZE as u64 {
            let data = super::collect_body(body, len).await?;
            blob.put_block_blob(data)
                .await
                .map_err(|e| classify(e, key))?;
            return Ok(());
        }
        let mut blocks = Vec::new();
        for_each_part(body, len, BLOCK_SIZE, |index, data| {
            let req = blob.put_block(block_id(index), data);
            blocks.push(BlobBlockType::new_uncommitted(block_id(index)));
            async move {
                req.await.map_err(|e| classify(e, key))?;
                Ok(())
            }
        })
        .await?;
        blob.put_block_list(BlockList { blocks })
            .await
            .map_err(|e| classify(e, key))?;
        Ok(())
    }

    async fn download(&self, key: &str, range: ByteRange) -> Result<ByteStream, RemoteError> {
        let blob = self.container.blob_client(key);
        // The size first: a ranged Get of an empty blob, or one open at the end, is refused with 416.
        let size = self.head(key).await?.size;
        let end = range.end.unwrap_or(size).min(size);
        if range.start > size || (range.start == size && !range.is_all()) {
            return Err(RemoteError::BadInput(format!(
                "range starts at {} but {key} has {size} bytes",
                range.start
            )));
        }
        if end == range.start {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let len = end - range.start;
        let mut pages = blob
            .get()
            .range(range.start..end)
            .chunk_size(len)
            .into_stream();
        let first = pages
            .next()
            .await
            .ok_or_else(|| RemoteError::Transient(format!("{key}: Get Blob returned nothing")))?
            .map_err(|e| classify(e, key))?;
        let stream = first.data.map(|chunk| {
            chunk.map_err(|e| std::io::Error::other(format!("reading the body: {e}")))
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> Result<RawObject, RemoteError> {
        let props = self
            .container
            .blob_client(key)
            .get_properties()
            .await
            .map_err(|e| classify(e, key))?;
        Ok(RawObject {
            key: key.to_string(),
            size: props.blob.properties.content_length,
            last_modified: Some(props.blob.properties.last_modified.into()),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), RemoteError> {
        match self.container.blob_client(key).delete().await {
            Ok(_) => Ok(()),
            Err(e) => match classify(e, key) {
                RemoteError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<(), RemoteError> {
        // No batch delete in this SDK: up to 16 single deletes at a time.
        let deletes: Vec<_> = keys.iter().map(|k| self.delete(k)).collect();
        let results: Vec<Result<(), RemoteError>> = futures::stream::iter(deletes)
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    fn max_keys_per_delete(&self) -> usize {
        256
    }
}
