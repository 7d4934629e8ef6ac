//! A bounds-checked little-endian reader over untrusted bytes: every read either succeeds or returns
//! [`ShortRead`], never panics.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("needed {needed} bytes at offset {offset}, only {available} left")]
pub struct ShortRead {
    pub offset: usize,
    pub needed: usize,
    pub available: usize,
}

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ShortRead> {
        if n > self.remaining() {
            return Err(ShortRead {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), ShortRead> {
        self.bytes(n).map(|_| ())
    }

    /// Skips to the next multiple of `align` from the start of the buffer.
    pub fn align_to(&mut self, align: usize) -> Result<(), ShortRead> {
        let pad = (align - self.pos % align) % align;
        self.skip(pad)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ShortRead> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ShortRead> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ShortRead> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, ShortRead> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, ShortRead> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, ShortRead> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, ShortRead> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count read from an `int` field, checked against what the rest of the buffer can hold.
    pub fn count(&mut self, elem_size: usize) -> Result<usize, ShortRead> {
        let at = self.pos;
        let n = self.i32()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(elem_size) <= self.remaining());
        fits.ok_or(ShortRead {
            offset: at,
            needed: (n.max(0) as usize).saturating_mul(elem_size),
            available: self.remaining(),
        })
    }

    /// A NUL-terminated string; returns the bytes without the NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], ShortRead> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                let s = &rest[..n];
                self.pos += n + 1;
                Ok(s)
            }
            None => Err(ShortRead {
                offset: self.pos,
                needed: rest.len() + 1,
                available: rest.len(),
            }),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_refuses_past_the_end() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, b'h', b'i', 0, 9]);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.cstr().unwrap(), b"hi");
        assert!(r.u16().is_err());
        assert_eq!(r.u8().unwrap(), 9);
        assert!(r.u8().is_err());
    }

    #[test]
    fn counts_are_checked_against_the_buffer() {
        let mut r = Reader::new(&[3, 0, 0, 0, 1, 2, 3, 4]);
        assert!(r.clone().count(4).is_err());
        assert_eq!(r.count(1).unwrap(), 3);
        let mut neg = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(neg.count(1).is_err());
    }
}
