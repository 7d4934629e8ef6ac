//! Byte layouts of docs/protocols.md (Neon's pagestream), written out by hand here rather than through the encoder.

use super::*;

const REL: RelFileNode = RelFileNode {
    spc: 1663,
    db: 5,
    rel: 16384,
};

fn hdr(version: Version) -> Vec<u8> {
    let mut v = Vec::new();
    if version == Version::V3 {
        v.extend_from_slice(&0x0000_1234_0000_0007u64.to_be_bytes());
    }
    v.extend_from_slice(&u64::MAX.to_be_bytes());
    v.extend_from_slice(&0x1_6B37_4D48u64.to_be_bytes());
    v
}

fn header(version: Version) -> RequestHeader {
    RequestHeader {
        reqid: if version == Version::V3 {
            0x0000_1234_0000_0007
        } else {
            0
        },
        request_lsn: Lsn(u64::MAX),
        not_modified_since: Lsn(0x1_6B37_4D48),
    }
}

fn reltag(fork: u8) -> Vec<u8> {
    [
        &1663u32.to_be_bytes()[..],
        &5u32.to_be_bytes(),
        &16384u32.to_be_bytes(),
        &[fork],
    ]
    .concat()
}

/// Every request: its bytes, the size docs/protocols.md gives (v2, v3) and what it parses to.
/// (request tag, body bytes, sizes v2 and v3, parsed body)
type RequestCase = (u8, Vec<u8>, (usize, usize), RequestBody);

fn requests() -> Vec<RequestCase> {
    vec![
        (
            0,
            reltag(0),
            (30, 38),
            RequestBody::Exists { rel: REL, fork: 0 },
        ),
        (
            1,
            reltag(2),
            (30, 38),
            RequestBody::Nblocks { rel: REL, fork: 2 },
        ),
        (
            2,
            [reltag(1), 77u32.to_be_bytes().to_vec()].concat(),
            (34, 42),
            RequestBody::GetPage {
                rel: REL,
                fork: 1,
                blkno: 77,
            },
        ),
        (
            3,
            5u32.to_be_bytes().to_vec(),
            (21, 29),
            RequestBody::DbSize { db: 5 },
        ),
        (
            4,
            [vec![2], 3u32.to_be_bytes().to_vec()].concat(),
            (22, 30),
            RequestBody::GetSlruSegment {
                kind: SlruKind::MultiXactOffsets,
                segno: 3,
            },
        ),
    ]
}

#[test]
fn every_request_layout_parses_and_encodes_byte_for_byte() {
    for version in [Version::V2, Version::V3] {
        for (tag, body, (v2, v3), expected) in requests() {
            let bytes = [vec![tag], hdr(version), body].concat();
            let size = if version == Version::V2 { v2 } else { v3 };
            assert_eq!(bytes.len(), size, "{version:?} tag {tag}");
            let req = parse_request(version, &bytes).unwrap();
            assert_eq!(
                req,
                Request {
                    hdr: header(version),
                    body: expected
                }
            );
            let mut out = BytesMut::new();
            encode_request(version, &req, &mut out);
            assert_eq!(&out[..], &bytes[..]);
            // One byte short or one too many, and nothing at all: malformed, never a panic.
            assert!(matches!(
                parse_request(version, &bytes[..bytes.len() - 1]),
                Err(PagestreamError::BadLength { .. })
            ));
            let mut long = bytes.clone();
            long.push(0);
            assert!(parse_request(version, &long).is_err());
            for cut in 0..bytes.len() {
                assert!(parse_request(version, &bytes[..cut]).is_err());
            }
        }
    }
    assert_eq!(parse_request(Version::V3, &[]), Err(PagestreamError::Empty));
    let test_tag = [vec![99], hdr(Version::V2)].concat();
    assert_eq!(
        parse_request(Version::V2, &test_tag),
        Err(PagestreamError::UnknownTag(99))
    );
    let bad_kind = [vec![4], hdr(Version::V2), vec![3, 0, 0, 0, 0]].concat();
    assert_eq!(
        parse_request(Version::V2, &bad_kind),
        Err(PagestreamError::BadSlruKind(3))
    );
}

fn response_bytes(version: Version, req: &Request, resp: &ResponseBody) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_response(version, req, resp, &mut out);
    out.to_vec()
}

#[test]
fn every_response_layout_byte_for_byte() {
    let page: Bytes = (0..BLCKSZ).map(|i| (i % 251) as u8).collect();
    let two_blocks: Bytes = (0..2 * BLCKSZ).map(|i| (i % 13) as u8).collect();
    // (response, response tag, payload, size v2, size v3)
    let answers = [
        (ResponseBody::Exists(true), 100u8, vec![1u8], 2, 39),
        (
            ResponseBody::Nblocks(0x0102_0304),
            101,
            vec![1, 2, 3, 4],
            5,
            42,
        ),
        (
            ResponseBody::GetPage(page.clone()),
            102,
            page.to_vec(),
            8193,
            8234,
        ),
        (
            ResponseBody::DbSize(-2),
            104,
            (-2i64).to_be_bytes().to_vec(),
            9,
            37,
        ),
        (
            ResponseBody::GetSlruSegment(two_blocks.clone()),
            105,
            [2u32.to_be_bytes().to_vec(), two_blocks.to_vec()].concat(),
            5 + 2 * BLCKSZ,
            34 + 2 * BLCKSZ,
        ),
    ];
    for ((tag, body, _, req_body), (resp, resp_tag, payload, v2_size, v3_size)) in
        requests().into_iter().zip(answers)
    {
        for version in [Version::V2, Version::V3] {
            let req = Request {
                hdr: header(version),
                body: req_body,
            };
            let bytes = response_bytes(version, &req, &resp);
            let expected = match version {
                // v2: the tag and the payload, no echo.
                Version::V2 => [vec![resp_tag], payload.clone()].concat(),
                // v3: the request's header and body echoed verbatim, then the payload.
                Version::V3 => {
                    [vec![resp_tag], hdr(version), body.clone(), payload.clone()].concat()
                }
            };
            assert_eq!(bytes, expected, "{version:?} tag {tag}");
            let size = if version == Version::V2 {
                v2_size
            } else {
                v3_size
            };
            assert_eq!(bytes.len(), size);
            assert_eq!(
                parse_response(version, &req, &bytes)
                    .unwrap_or_else(|e| panic!("{version:?} tag {tag}: {e}")),
                resp
            );

            // An error answers with the header only (v3), then the message and a NUL.
            let err = ResponseBody::Error("relation 1663/5/16384 not found".into());
            let bytes = response_bytes(version, &req, &err);
            let text = b"relation 1663/5/16384 not found\0".to_vec();
            let expected = match version {
                Version::V2 => [vec![103], text].concat(),
                Version::V3 => [vec![103], hdr(version), text].concat(),
            };
            assert_eq!(bytes, expected);
            assert_eq!(
                bytes.len(),
                if version == Version::V2 { 2 } else { 26 } + 31
            );
            assert_eq!(parse_response(version, &req, &bytes).unwrap(), err);
        }
    }
}

#[test]
fn v3_echo_is_checked_like_a_compute_does() {
    let req = Request {
        hdr: header(Version::V3),
        body: RequestBody::Nblocks { rel: REL, fork: 0 },
    };
    let good = response_bytes(Version::V3, &req, &ResponseBody::Nblocks(9));
    for i in 1..good.len() - 4 {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        assert_eq!(
            parse_response(Version::V3, &req, &bad),
            Err(ResponseParseError::Echo),
            "byte {i}"
        );
    }
    let mut wrong_tag = good.clone();
    wrong_tag[0] = 102;
    assert!(parse_response(Version::V3, &req, &wrong_tag).is_err());
    assert!(parse_response(Version::V3, &req, &good[..good.len() - 1]).is_err());
}
