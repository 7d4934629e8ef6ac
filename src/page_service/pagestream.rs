//! The pagestream messages of `pagestream_v2` and `pagestream_v3` (docs/protocols.md): requests parsed from
//! a CopyData payload, responses encoded into one. All integers big-endian.
//!
//! Request: v2 `u8 tag | u64 request_lsn | u64 not_modified_since`, v3 with `u64 reqid` after the tag; then the
//! body: Exists (0) and Nblocks (1) a RelTag (`u32 spc | u32 db | u32 rel | u8 fork`), GetPage (2) a RelTag and
//! `u32 blkno`, DbSize (3) `u32 db`, GetSlruSegment (4) `u8 kind | u32 segno`. A request with trailing bytes, a
//! short one or an unknown tag is malformed.
//!
//! Response: tag (Exists 100, Nblocks 101, GetPage 102, Error 103, DbSize 104, GetSlruSegment 105); v3 echoes the request's header and body verbatim (an Error
//! only the header); then the payload: Exists `u8`, Nblocks `u32`, GetPage the 8192-byte page, DbSize `i64`,
//! GetSlruSegment `u32 n_blocks` and the blocks, Error the message and a NUL.

use bytes::{BufMut, Bytes, BytesMut};

use crate::pg::constants::BLCKSZ;
use crate::pg::{Lsn, RelFileNode};
use crate::walredo::SlruKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagestreamError {
    #[error("empty pagestream message")]
    Empty,
    #[error("unknown pagestream request tag {0}")]
    UnknownTag(u8),
    #[error("pagestream request (tag {tag}) of {len} bytes, expected {expected}")]
    BadLength {
        tag: u8,
        len: usize,
        expected: usize,
    },
    #[error("unknown SLRU kind {0}")]
    BadSlruKind(u8),
}

/// What every request carries: reqid (0 in v2), request LSN and not_modified_since, echoed by v3 responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub reqid: u64,
    pub request_lsn: Lsn,
    pub not_modified_since: Lsn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    Exists {
        rel: RelFileNode,
        fork: u8,
    },
    Nblocks {
        rel: RelFileNode,
        fork: u8,
    },
    GetPage {
        rel: RelFileNode,
        fork: u8,
        blkno: u32,
    },
    DbSize {
        db: u32,
    },
    GetSlruSegment {
        kind: SlruKind,
        segno: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub hdr: RequestHeader,
    pub body: RequestBody,
}

pub const TAG_EXISTS: u8 = 0;
pub const TAG_NBLOCKS: u8 = 1;
pub const TAG_GET_PAGE: u8 = 2;
pub const TAG_DB_SIZE: u8 = 3;
pub const TAG_GET_SLRU_SEGMENT: u8 = 4;
pub const TAG_ERROR_RESPONSE: u8 = 103;

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    Exists(bool),
    Nblocks(u32),
    /// Exactly BLCKSZ bytes.
    GetPage(Bytes),
    DbSize(i64),
    /// The segment's blocks, BLCKSZ bytes each.
    GetSlruSegment(Bytes),
    Error(String),
}

fn slru_kind_code(kind: SlruKind) -> u8 {
    match kind {
        SlruKind::Clog => 0,
        SlruKind::MultiXactMembers => 1,
        SlruKind::MultiXactOffsets => 2,
    }
}

fn slru_kind_of(code: u8) -> Result<SlruKind, PagestreamError> {
    match code {
        0 => Ok(SlruKind::Clog),
        1 => Ok(SlruKind::MultiXactMembers),
        2 => Ok(SlruKind::MultiXactOffsets),
        other => Err(PagestreamError::BadSlruKind(other)),
    }
}

impl RequestBody {
    pub fn tag(&self) -> u8 {
        match self {
            RequestBody::Exists { .. } => TAG_EXISTS,
            RequestBody::Nblocks { .. } => TAG_NBLOCKS,
            RequestBody::GetPage { .. } => TAG_GET_PAGE,
            RequestBody::DbSize { .. } => TAG_DB_SIZE,
            RequestBody::GetSlruSegment { .. } => TAG_GET_SLRU_SEGMENT,
        }
    }

    /// The tag of the answer: Exists 100, Nblocks 101, GetPage 102, DbSize 104, GetSlruSegment 105 (103 is
    /// Error).
    pub fn response_tag(&self) -> u8 {
        match self {
            RequestBody::Exists { .. } => 100,
            RequestBody::Nblocks { .. } => 101,
            RequestBody::GetPage { .. } => 102,
            RequestBody::DbSize { .. } => 104,
            RequestBody::GetSlruSegment { .. } => 105,
        }
    }

    fn body_len(tag: u8) -> Option<usize> {
        Some(match tag {
            TAG_EXISTS | TAG_NBLOCKS => 13,
            TAG_GET_PAGE => 17,
            TAG_DB_SIZE => 4,
            TAG_GET_SLRU_SEGMENT => 5,
            _ => return None,
        })
    }

    /// The body as the request carries it (and a v3 response echoes it).
    fn encode(&self, out: &mut BytesMut) {
        let reltag = |out: &mut BytesMut, rel: &RelFileNode, fork: u8| {
            out.put_u32(rel.spc);
            out.put_u32(rel.db);
            out.put_u32(rel.rel);
            out.put_u8(fork);
        };
        match self {
            RequestBody::Exists { rel, fork } | RequestBody::Nblocks { rel, fork } => {
                reltag(out, rel, *fork)
            }
            RequestBody::GetPage { rel, fork, blkno } => {
                reltag(out, rel, *fork);
                out.put_u32(*blkno);
            }
            RequestBody::DbSize { db } => out.put_u32(*db),
            RequestBody::GetSlruSegment { kind, segno } => {
                out.put_u8(slru_kind_code(*kind));
                out.put_u32(*segno);
            }
        }
    }
}

fn header_len(version: Version) -> usize {
    match version {
        Version::V2 => 17,
        Version::V3 => 25,
    }
}

/// Reads big-endian integers from a slice whose length was checked before.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        let v = self.0[0];
        self.0 = &self.0[1..];
        v
    }
    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.0[..4].try_into().expect("4 bytes"));
        self.0 = &self.0[4..];
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        self.0 = &self.0[8..];
        v
    }
    fn rel(&mut self) -> (RelFileNode, u8) {
        let rel = RelFileNode {
            spc: self.u32(),
            db: self.u32(),
            rel: self.u32(),
        };
        (rel, self.u8())
    }
}

/// Parses one request (a CopyData payload).
pub fn parse_request(version: Version, msg: &[u8]) -> Result<Request, PagestreamError> {
    let &tag = msg.first().ok_or(PagestreamError::Empty)?;
    let body_len = RequestBody::body_len(tag).ok_or(PagestreamError::UnknownTag(tag))?;
    let expected = header_len(version) + body_len;
    if msg.len() != expected {
        return Err(PagestreamError::BadLength {
            tag,
            len: msg.len(),
            expected,
        });
    }
    let mut c = Cursor(&msg[1..]);
    let reqid = match version {
        Version::V2 => 0,
        Version::V3 => c.u64(),
    };
    let hdr = RequestHeader {
        reqid,
        request_lsn: Lsn(c.u64()),
        not_modified_since: Lsn(c.u64()),
    };
    let body = match tag {
        TAG_EXISTS => {
            let (rel, fork) = c.rel();
            RequestBody::Exists { rel, fork }
        }
        TAG_NBLOCKS => {
            let (rel, fork) = c.rel();
            RequestBody::Nblocks { rel, fork }
        }
        TAG_GET_PAGE => {
            let (rel, fork) = c.rel();
            RequestBody::GetPage {
                rel,
                fork,
                blkno: c.u32(),
            }
        }
        TAG_DB_SIZE => RequestBody::DbSize { db: c.u32() },
        _ => RequestBody::GetSlruSegment {
            kind: slru_kind_of(c.u8())?,
            segno: c.u32(),
        },
    };
    Ok(Request { hdr, body })
}

/// Encodes a request (the client side).
pub fn encode_request(version: Version, req: &Request, out: &mut BytesMut) {
    out.put_u8(req.body.tag());
    if version == Version::V3 {
        out.put_u64(req.hdr.reqid);
    }
    out.put_u64(req.hdr.request_lsn.0);
    out.put_u64(req.hdr.not_modified_since.0);
    req.body.encode(out);
}

/// The page of a GetPage answer: sent from its own buffer after [`encode_response_header`] (not copied).
pub fn response_page(resp: &ResponseBody) -> Option<&Bytes> {
    match resp {
        ResponseBody::GetPage(page) => Some(page),
        _ => None,
    }
}

/// The tag and, in v3, the echoed request: what comes before a response's own fields (all of a GetPage
/// answer but its page).
pub fn encode_response_header(
    version: Version,
    req: &Request,
    resp: &ResponseBody,
    out: &mut BytesMut,
) {
    let tag = match resp {
        ResponseBody::Error(_) => TAG_ERROR_RESPONSE,
        _ => req.body.response_tag(),
    };
    out.put_u8(tag);
    if version == Version::V3 {
        out.put_u64(req.hdr.reqid);
        out.put_u64(req.hdr.request_lsn.0);
        out.put_u64(req.hdr.not_modified_since.0);
        if !matches!(resp, ResponseBody::Error(_)) {
            req.body.encode(out);
        }
    }
}

/// Encodes the response to `req`.
pub fn encode_response(version: Version, req: &Request, resp: &ResponseBody, out: &mut BytesMut) {
    encode_response_header(version, req, resp, out);
    match resp {
        ResponseBody::Exists(e) => out.put_u8(u8::from(*e)),
        ResponseBody::Nblocks(n) => out.put_u32(*n),
        ResponseBody::GetPage(page) => out.put_slice(page),
        ResponseBody::DbSize(size) => out.put_i64(*size),
        ResponseBody::GetSlruSegment(blocks) => {
            out.put_u32((blocks.len() / BLCKSZ) as u32);
            out.put_slice(blocks);
        }
        ResponseBody::Error(msg) => {
            // The C side reads a NUL-terminated string: a NUL inside would cut it short.
            out.put_slice(msg.replace('\0', " ").as_bytes());
            out.put_u8(0);
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseParseError {
    #[error("response of {0} bytes is too short or has trailing bytes")]
    Length(usize),
    #[error("response tag {got} does not answer request tag {request}")]
    Tag { got: u8, request: u8 },
    #[error("v3 response does not echo its request")]
    Echo,
    #[error("error response is not NUL-terminated")]
    Unterminated,
}

/// Parses the response to `req` (the client side), checking the v3 echo the way a compute does.
pub fn parse_response(
    version: Version,
    req: &Request,
    msg: &[u8],
) -> Result<ResponseBody, ResponseParseError> {
    let len_err = || ResponseParseError::Length(msg.len());
    let &tag = msg.first().ok_or_else(len_err)?;
    let mut rest = &msg[1..];
    if version == Version::V3 {
        let mut hdr = BytesMut::new();
        hdr.put_u64(req.hdr.reqid);
        hdr.put_u64(req.hdr.request_lsn.0);
        hdr.put_u64(req.hdr.not_modified_since.0);
        if tag != TAG_ERROR_RESPONSE {
            req.body.encode(&mut hdr);
        }
        let echoed = rest.get(..hdr.len()).ok_or_else(len_err)?;
        if echoed != &hdr[..] {
            return Err(ResponseParseError::Echo);
        }
        rest = &rest[hdr.len()..];
    }
    if tag == TAG_ERROR_RESPONSE {
        let (text, tail) = rest.split_last().ok_or(ResponseParseError::Unterminated)?;
        if *text != 0 || tail.contains(&0) {
            return Err(ResponseParseError::Unterminated);
        }
        return Ok(ResponseBody::Error(
            String::from_utf8_lossy(tail).into_owned(),
        ));
    }
    if tag != req.body.response_tag() {
        return Err(ResponseParseError::Tag {
            got: tag,
            request: req.body.tag(),
        });
    }
    let exact = |n: usize| (rest.len() == n).then_some(()).ok_or_else(len_err);
    Ok(match req.body {
        RequestBody::Exists { .. } => {
            exact(1)?;
            ResponseBody::Exists(rest[0] != 0)
        }
        RequestBody::Nblocks { .. } => {
            exact(4)?;
            ResponseBody::Nblocks(u32::from_be_bytes(rest.try_into().expect("4")))
        }
        RequestBody::GetPage { .. } => {
            exact(BLCKSZ)?;
            ResponseBody::GetPage(Bytes::copy_from_slice(rest))
        }
        RequestBody::DbSize { .. } => {
            exact(8)?;
            ResponseBody::DbSize(i64::from_be_bytes(rest.try_into().expect("8")))
        }
        RequestBody::GetSlruSegment { .. } => {
            let n = rest.get(..4).ok_or_else(len_err)?;
            let n = u32::from_be_bytes(n.try_into().expect("4")) as usize;
            exact(4 + n * BLCKSZ)?;
            ResponseBody::GetSlruSegment(Bytes::copy_from_slice(&rest[4..]))
        }
    })
}

#[cfg(test)]
mod tests;
