use super::*;

fn objs(keys: &[&str]) -> Vec<RawObject> {
    let mut v: Vec<RawObject> = keys
        .iter()
        .map(|k| RawObject {
            key: k.to_string(),
            size: 1,
            last_modified: None,
        })
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn n(x: u32) -> NonZeroU32 {
    NonZeroU32::new(x).unwrap()
}

/// Every page of `page_sorted`, as (prefixes, keys) per page.
fn all_pages(
    all: &[RawObject],
    prefix: &str,
    mode: ListingMode,
    max: u32,
) -> Vec<(Vec<String>, Vec<String>)> {
    let mut pages = vec![];
    let mut token: Option<String> = None;
    loop {
        let (page, next) = page_sorted(all, prefix, mode, n(max), token.as_deref());
        pages.push((
            page.prefixes,
            page.keys.into_iter().map(|o| o.key).collect(),
        ));
        match next {
            Some(t) => token = Some(t),
            None => return pages,
        }
    }
}

#[test]
fn paging_without_delimiter_visits_each_key_once() {
    let all = objs(&["a/1", "a/2", "a/3", "ab/1", "b/1"]);
    let pages = all_pages(&all, "a/", ListingMode::NoDelimiter, 2);
    assert_eq!(
        pages,
        vec![
            (vec![], vec!["a/1".to_string(), "a/2".to_string()]),
            (vec![], vec!["a/3".to_string()]),
        ]
    );
    // A string prefix also matches the sibling "ab/".
    let pages = all_pages(&all, "a", ListingMode::NoDelimiter, 10);
    assert_eq!(pages[0].1.len(), 4);
}

#[test]
fn delimiter_folds_deeper_keys_and_pages_count_prefixes() {
    let all = objs(&["t/x/1", "t/x/2", "t/y/1", "t/z", "t/zz/1", "u/1"]);
    let pages = all_pages(&all, "t/", ListingMode::WithDelimiter, 2);
    assert_eq!(
        pages,
        vec![
            (vec!["t/x/".to_string(), "t/y/".to_string()], vec![]),
            (vec!["t/zz/".to_string()], vec!["t/z".to_string()]),
        ]
    );
    let pages = all_pages(&all, "", ListingMode::WithDelimiter, 1000);
    assert_eq!(
        pages,
        vec![(vec!["t/".to_string(), "u/".to_string()], vec![])]
    );
}

#[test]
fn remote_paths_refuse_bad_shapes() {
    for bad in ["", "/a", "a/", "a//b", "a/../b", ".", "a/./b"] {
        assert!(RemotePath::new(bad).is_err(), "{bad:?}");
    }
    let p = RemotePath::new("tenants/t/timelines/x/index_part.json").unwrap();
    assert_eq!(p.object_name(), "index_part.json");
}

#[test]
fn range_headers_are_inclusive() {
    assert_eq!(ByteRange::ALL.http_header(), None);
    assert_eq!(
        ByteRange {
            start: 10,
            end: Some(20)
        }
        .http_header()
        .as_deref(),
        Some("bytes=10-19")
    );
    assert_eq!(
        ByteRange {
            start: 5,
            end: None
        }
        .http_header()
        .as_deref(),
        Some("bytes=5-")
    );
    assert!(
        ByteRange {
            start: 5,
            end: Some(5)
        }
        .check()
        .is_err()
    );
}

#[tokio::test]
async fn parts_split_the_body_and_check_its_length() {
    let chunks: Vec<std::io::Result<Bytes>> =
        vec![Ok(Bytes::from(vec![1u8; 5])), Ok(Bytes::from(vec![2u8; 7]))];
    let body: ByteStream = Box::pin(futures::stream::iter(chunks));
    let mut sizes = vec![];
    for_each_part(body, 12, 4, |i, d| {
        sizes.push((i, d.len()));
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(sizes, vec![(0, 4), (1, 4), (2, 4)]);

    let body: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from(vec![0u8; 3]))]));
    let err = collect_body(body, 4).await.unwrap_err();
    assert!(matches!(err, RemoteError::BadInput(_)), "{err}");
    let body: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from(vec![0u8; 5]))]));
    assert!(collect_body(body, 4).await.is_err());
}
