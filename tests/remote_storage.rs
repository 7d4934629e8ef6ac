//! The conformance suite of remote storage: the same checks against a local directory, a real S3 server that
//! checks SigV4 signatures (SeaweedFS) and Azurite. Each backend must list more than 1,000 keys across pages,
//! keep a prefix from leaking into its sibling, serve byte ranges, replace an object on overwrite, accept the
//! delete of a missing key and move an object larger than one multipart part; and tell a permanent error
//! (wrong credentials, a missing bucket) from a transient one.

mod support;

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use bytes::Bytes;
use futures::StreamExt;
use pageserver::config::{HumanDuration, RemoteStorageConfig};
use pageserver::remote_storage::{
    ByteRange, ByteStream, GenericRemoteStorage, ListingMode, RemoteError, RemotePath,
    StaticCredentials,
};
use support::objstore::{AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, S3Server};

/// Keys of the listing check: more than one page of 1,000.
const MANY: usize = 1_050;
/// Larger than one part of the S3 multipart upload and one Azure block (8 MiB each).
const LARGE: usize = 2 * (8 << 20) + 12_345;

fn path(p: &str) -> RemotePath {
    RemotePath::new(p).unwrap()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect::<Vec<u8>>(),
    )
}

fn config_from(toml_table: &str) -> RemoteStorageConfig {
    let table: toml::Table = toml::from_str(&format!("rs = {toml_table}")).unwrap();
    let mut rs: RemoteStorageConfig = table["rs"].clone().try_into().unwrap();
    rs.timeout = HumanDuration::from_secs(60);
    rs.small_timeout = HumanDuration::from_secs(20);
    rs
}

async fn storage(
    config: &RemoteStorageConfig,
    creds: Option<StaticCredentials>,
) -> GenericRemoteStorage {
    GenericRemoteStorage::from_config_with(config, 0, creds)
        .await
        .unwrap()
}

/// A server that has just started may refuse the first requests (bucket creation in progress): wait for a
/// listing to succeed.
async fn wait_usable(s: &GenericRemoteStorage) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match s.list(None, ListingMode::WithDelimiter).await {
            Ok(_) => return,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("storage not usable yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => panic!("storage not usable after 60 s: {e}"),
        }
    }
}

async fn conformance(
    config: RemoteStorageConfig,
    sibling: RemoteStorageConfig,
    creds: Option<StaticCredentials>,
) {
    let s = storage(&config, creds.clone()).await;
    let other = storage(&sibling, creds).await;
    wait_usable(&s).await;

    // More than 1,000 keys, across pages; a sibling prefix ("many2/") stays out of "many/".
    let keys: Vec<String> = (0..MANY).map(|i| format!("many/{i:05}")).collect();
    futures::stream::iter(keys.iter())
        .map(|k| {
            let s = s.clone();
            async move { s.upload_bytes(Bytes::from(k.clone()), &path(k)).await }
        })
        .buffer_unordered(32)
        .for_each(|r| async { r.unwrap() })
        .await;
    s.upload_bytes(Bytes::from_static(b"sibling"), &path("many2/x"))
        .await
        .unwrap();
    let (first, token) = s
        .list_page(Some("many/"), ListingMode::NoDelimiter, None, None)
        .await
        .unwrap();
    assert_eq!(first.keys.len(), 1000, "first page holds the page maximum");
    assert!(token.is_some(), "a continuation token after a full page");
    let all = s
        .list(Some("many/"), ListingMode::NoDelimiter)
        .await
        .unwrap();
    let listed: Vec<String> = all.keys.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        listed, keys,
        "every key once, in order, nothing of the sibling prefix"
    );
    assert!(all.keys.iter().all(|o| o.size == 10));
    // Small pages through the whole listing visit the same keys.
    let mut paged = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let (page, next) = s
            .list_page(
                Some("many/"),
                ListingMode::NoDelimiter,
                NonZeroU32::new(400),
                token,
            )
            .await
            .unwrap();
        pages += 1;
        paged.extend(page.keys.into_iter().map(|o| o.key.to_string()));
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, keys);

    // Delimiter: common prefixes and the keys at this level only; "tree/a/" does not match "tree/ab/".
    for k in ["tree/a/1", "tree/a/2", "tree/ab/1", "tree/b/x/1", "tree/c"] {
        s.upload_bytes(Bytes::from_static(b"t"), &path(k))
            .await
            .unwrap();
    }
    let level = s
        .list(Some("tree/"), ListingMode::WithDelimiter)
        .await
        .unwrap();
    let prefixes: Vec<String> = level.prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(prefixes, ["tree/a", "tree/ab", "tree/b"]);
    let here: Vec<String> = level.keys.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(here, ["tree/c"]);
    let a = s
        .list(Some("tree/a/"), ListingMode::NoDelimiter)
        .await
        .unwrap();
    let a: Vec<String> = a.keys.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(a, ["tree/a/1", "tree/a/2"]);
    let top = s.list(None, ListingMode::WithDelimiter).await.unwrap();
    let top: BTreeSet<String> = top.prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(top, ["many", "many2", "tree"].map(String::from).into());

    // The sibling storage (prefix "<p>2" beside "<p>") sees none of this, and we see none of its keys.
    other
        .upload_bytes(Bytes::from_static(b"o"), &path("theirs"))
        .await
        .unwrap();
    let theirs = other.list(None, ListingMode::NoDelimiter).await.unwrap();
    let theirs: Vec<String> = theirs.keys.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(theirs, ["theirs"]);
    let r = s.head(&path("theirs")).await;
    assert!(matches!(r, Err(RemoteError::NotFound(_))), "{r:?}");

    // Byte ranges: inside, open-ended, an end past the size (clamped), the whole object.
    let data = pattern(100_000, 7);
    s.upload_bytes(data.clone(), &path("ranges/obj"))
        .await
        .unwrap();
    for (start, end, want) in [
        (10, Some(20), &data[10..20]),
        (99_990, None, &data[99_990..]),
        (99_000, Some(200_000), &data[99_000..]),
        (0, None, &data[..]),
    ] {
        let got = s
            .download_bytes(&path("ranges/obj"), ByteRange { start, end })
            .await
            .unwrap();
        assert_eq!(&got[..], want, "range {start}..{end:?}");
    }
    assert_eq!(s.head(&path("ranges/obj")).await.unwrap().size, 100_000);

    // Overwrite replaces the whole object, also with a shorter one.
    s.upload_bytes(pattern(5000, 1), &path("ow")).await.unwrap();
    s.upload_bytes(pattern(300, 2), &path("ow")).await.unwrap();
    assert_eq!(
        s.download_bytes(&path("ow"), ByteRange::ALL).await.unwrap(),
        pattern(300, 2)
    );
    assert_eq!(s.head(&path("ow")).await.unwrap().size, 300);

    // An object larger than one part, uploaded as a stream of odd-sized chunks.
    let large = pattern(LARGE, 3);
    let chunks: Vec<std::io::Result<Bytes>> = large
        .chunks(1_000_003)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body: ByteStream = Box::pin(futures::stream::iter(chunks));
    s.upload(body, LARGE as u64, &path("large/obj"))
        .await
        .unwrap();
    assert_eq!(s.head(&path("large/obj")).await.unwrap().size, LARGE as u64);
    let got = s
        .download_bytes(&path("large/obj"), ByteRange::ALL)
        .await
        .unwrap();
    assert!(
        got == large,
        "large object differs ({} bytes back)",
        got.len()
    );
    let boundary = 8u64 << 20;
    let got = s
        .download_bytes(
            &path("large/obj"),
            ByteRange {
                start: boundary - 100,
                end: Some(boundary + 100),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        &got[..],
        &large[boundary as usize - 100..boundary as usize + 100]
    );

    // A body shorter or longer than its given length is refused, and nothing becomes visible.
    for (len, given) in [(100usize, 101u64), (100, 99), (LARGE, LARGE as u64 + 1)] {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(pattern(len, 9)) }));
        let err = s.upload(body, given, &path("short")).await.unwrap_err();
        assert!(matches!(err, RemoteError::BadInput(_)), "{err}");
        assert!(matches!(
            s.head(&path("short")).await,
            Err(RemoteError::NotFound(_))
        ));
    }

    // Missing keys: head and download say NotFound, delete succeeds.
    assert!(matches!(
        s.head(&path("nope/x")).await,
        Err(RemoteError::NotFound(_))
    ));
    assert!(matches!(
        s.download_bytes(&path("nope/x"), ByteRange::ALL).await,
        Err(RemoteError::NotFound(_))
    ));
    s.delete(&path("nope/x")).await.unwrap();
    s.delete(&path("ow")).await.unwrap();
    assert!(matches!(
        s.head(&path("ow")).await,
        Err(RemoteError::NotFound(_))
    ));

    // Delete many (more than one batch of every backend), including missing ones; then the prefix is empty.
    let mut doomed: Vec<RemotePath> = keys.iter().map(|k| path(k)).collect();
    doomed.push(path("many/never-existed"));
    s.delete_objects(&doomed).await.unwrap();
    let left = s
        .list(Some("many/"), ListingMode::NoDelimiter)
        .await
        .unwrap();
    assert!(left.keys.is_empty(), "{} keys left", left.keys.len());
    s.delete_prefix("tree/").await.unwrap();
    assert!(
        s.list(Some("tree/"), ListingMode::WithDelimiter)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(
        s.head(&path("many2/x")).await.is_ok(),
        "delete_prefix many/ left many2/ alone"
    );
}

fn prefixed(table: &str, key: &str, prefix: &str) -> String {
    table.replacen("}", &format!(", {key}='{prefix}'}}"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("p");
    let sibling = dir.path().join("p2");
    conformance(
        config_from(&format!("{{local_path='{}'}}", root.display())),
        config_from(&format!("{{local_path='{}'}}", sibling.display())),
        None,
    )
    .await;
    // Nothing of an upload in progress is ever left or listed.
    let temp = std::fs::read_dir(root.join(".___temp")).unwrap().count();
    assert_eq!(temp, 0, "temp files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3() {
    let server = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let base = format!(
        "{{bucket_name='{}', bucket_region='us-east-1', endpoint='{}'}}",
        server.bucket, server.endpoint
    );
    let creds = StaticCredentials {
        access_key: server.access_key.clone(),
        secret_key: server.secret_key.clone(),
    };
    conformance(
        config_from(&prefixed(&base, "prefix_in_bucket", "/conformance/p/")),
        config_from(&prefixed(&base, "prefix_in_bucket", "conformance/p2")),
        Some(creds.clone()),
    )
    .await;

    // A wrong secret (the signature check fails) and a missing bucket are permanent errors.
    let wrong = StaticCredentials {
        access_key: server.access_key.clone(),
        secret_key: "not-the-secret".into(),
    };
    let s = storage(&config_from(&base), Some(wrong)).await;
    let err = s.list(None, ListingMode::NoDelimiter).await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Permanent(_)),
        "wrong secret: {err}"
    );
    assert!(
        !err.to_string().contains("not-the-secret"),
        "the secret is not in the error: {err}"
    );
    let missing = base.replace(
        &format!("bucket_name='{}'", server.bucket),
        "bucket_name='no-such-bucket'",
    );
    let s = storage(&config_from(&missing), Some(creds)).await;
    // (SeaweedFS creates a bucket on the first PUT by an admin identity, so the check is a listing.)
    let err = s.list(None, ListingMode::NoDelimiter).await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Permanent(_)),
        "missing bucket: {err}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_azure() {
    let server = tokio::task::spawn_blocking(AzuriteServer::start)
        .await
        .unwrap();
    let base = format!(
        "{{container_name='{}', container_region='local', storage_account='{AZURITE_ACCOUNT}', endpoint='{}'}}",
        server.container, server.endpoint
    );
    let creds = StaticCredentials {
        access_key: String::new(),
        secret_key: AZURITE_KEY.into(),
    };
    conformance(
        config_from(&prefixed(&base, "prefix_in_container", "/conformance/p/")),
        config_from(&prefixed(&base, "prefix_in_container", "conformance/p2")),
        Some(creds.clone()),
    )
    .await;

    // A wrong key and a missing container are permanent errors.
    let wrong = StaticCredentials {
        access_key: String::new(),
        // Valid base64, wrong key.
        secret_key: "bm90LXRoZS1rZXk=".into(),
    };
    let s = storage(&config_from(&base), Some(wrong)).await;
    let err = s.list(None, ListingMode::NoDelimiter).await.unwrap_err();
    assert!(matches!(err, RemoteError::Permanent(_)), "wrong key: {err}");
    let missing = base.replace(
        &format!("container_name='{}'", server.container),
        "container_name='no-such-container'",
    );
    let s = storage(&config_from(&missing), Some(creds)).await;
    let err = s
        .upload_bytes(Bytes::from_static(b"x"), &path("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::Permanent(_)),
        "missing container: {err}"
    );
    drop(server);
}
