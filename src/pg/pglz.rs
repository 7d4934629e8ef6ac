//! Decompression of PostgreSQL's pglz format (common/pg_lzcompress.c), used for compressed full-page images
//! with `wal_compression = pglz`.
//!
//! The stream is a sequence of control bytes, each followed by up to 8 items, one per bit from the lowest: a 0
//! bit is one literal byte; a 1 bit is a back-reference of 2 or 3 bytes: length = (b0 & 0x0F) + 3 (and when
//! that is 18, one more byte is added to it), offset = (b0 & 0xF0) << 4 | b1. A back-reference may overlap the
//! bytes it produces.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PglzError {
    #[error(
        "back-reference at input offset {at} reaches {offset} bytes back, only {produced} produced"
    )]
    BadOffset {
        at: usize,
        offset: usize,
        produced: usize,
    },
    #[error("input ended inside an item at offset {at}")]
    Truncated { at: usize },
    #[error(
        "produced {produced} bytes from {consumed} of {input} input bytes, expected {expected}"
    )]
    WrongLength {
        produced: usize,
        expected: usize,
        consumed: usize,
        input: usize,
    },
}

/// Decompresses `src` into exactly `dst.len()` bytes; like PostgreSQL with `check_complete`, all of the
/// input must be used and all of the output filled.
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), PglzError> {
    let mut sp = 0;
    let mut dp = 0;
    while sp < src.len() && dp < dst.len() {
        let mut ctrl = src[sp];
        sp += 1;
        let mut bit = 0;
        while bit < 8 && sp < src.len() && dp < dst.len() {
            if ctrl & 1 != 0 {
                let at = sp;
                if sp + 2 > src.len() {
                    return Err(PglzError::Truncated { at });
                }
                let mut len = (src[sp] & 0x0F) as usize + 3;
                let offset = (((src[sp] & 0xF0) as usize) << 4) | src[sp + 1] as usize;
                sp += 2;
                if len == 18 {
                    let extra = *src.get(sp).ok_or(PglzError::Truncated { at })?;
                    len += extra as usize;
                    sp += 1;
                }
                if offset == 0 || offset > dp {
                    return Err(PglzError::BadOffset {
                        at,
                        offset,
                        produced: dp,
                    });
                }
                let len = len.min(dst.len() - dp);
                // Byte by byte, so that an overlapping reference repeats what it has just written.
                for i in 0..len {
                    dst[dp + i] = dst[dp + i - offset];
                }
                dp += len;
            } else {
                dst[dp] = src[sp];
                dp += 1;
                sp += 1;
            }
            ctrl >>= 1;
            bit += 1;
        }
    }
    if dp != dst.len() || sp != src.len() {
        return Err(PglzError::WrongLength {
            produced: dp,
            expected: dst.len(),
            consumed: sp,
            input: src.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_references() {
        // ctrl 0b0000_0010: literal 'a', then a reference of length 3+2=5 at offset 1 -> "aaaaaa".
        let src = [0b0000_0010, b'a', 0x02, 0x01];
        let mut out = [0u8; 6];
        decompress(&src, &mut out).unwrap();
        assert_eq!(&out, b"aaaaaa");
    }

    #[test]
    fn long_references_use_the_extra_length_byte() {
        // literal 'x', then length 18 + 100 = 118 at offset 1.
        let src = [0b0000_0010, b'x', 0x0F, 0x01, 100];
        let mut out = [0u8; 119];
        decompress(&src, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut out = [0u8; 4];
        assert!(matches!(
            decompress(&[0x01, 0x00, 0x05], &mut out),
            Err(PglzError::BadOffset { .. })
        ));
        assert!(matches!(
            decompress(&[0x02, b'a', 0x00], &mut out),
            Err(PglzError::Truncated { .. })
        ));
        assert!(matches!(
            decompress(&[0x00, b'a'], &mut out),
            Err(PglzError::WrongLength { .. })
        ));
    }
}
