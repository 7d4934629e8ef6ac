//! Layer file names (docs/storage-format.md §2; Neon's `pageserver/src/tenant/storage_layer/layer_name.rs`
//! names its layers the same way): a delta layer `<key_start>-<key_end>__<lsn_start>-<lsn_end>`, an image layer
//! `<key_start>-<key_end>__<lsn>`; keys in their 36-hex form, LSNs as 16 hex digits, ranges end-exclusive (an
//! image at LSN L covers L..L+1).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::pg::Lsn;
use crate::repository::Key;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LayerName {
    Delta {
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    },
    Image {
        key_range: Range<Key>,
        lsn: Lsn,
    },
}

impl LayerName {
    pub fn key_range(&self) -> &Range<Key> {
        match self {
            LayerName::Delta { key_range, .. } | LayerName::Image { key_range, .. } => key_range,
        }
    }

    /// The LSNs the layer covers, end-exclusive.
    pub fn lsn_range(&self) -> Range<Lsn> {
        match self {
            LayerName::Delta { lsn_range, .. } => lsn_range.clone(),
            LayerName::Image { lsn, .. } => *lsn..Lsn(lsn.0 + 1),
        }
    }

    pub fn is_delta(&self) -> bool {
        matches!(self, LayerName::Delta { .. })
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerName::Delta {
                key_range,
                lsn_range,
            } => write!(
                f,
                "{}-{}__{:016X}-{:016X}",
                key_range.start, key_range.end, lsn_range.start.0, lsn_range.end.0
            ),
            LayerName::Image { key_range, lsn } => {
                write!(f, "{}-{}__{:016X}", key_range.start, key_range.end, lsn.0)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a layer file name: {0:?}")]
pub struct LayerNameError(pub String);

impl FromStr for LayerName {
    type Err = LayerNameError;

    fn from_str(s: &str) -> Result<LayerName, LayerNameError> {
        let err = || LayerNameError(s.to_string());
        let (keys, lsns) = s.split_once("__").ok_or_else(err)?;
        let (k1, k2) = keys.split_once('-').ok_or_else(err)?;
        let key_range =
            k1.parse::<Key>().map_err(|_| err())?..k2.parse::<Key>().map_err(|_| err())?;
        if key_range.start >= key_range.end {
            return Err(err());
        }
        let lsn = |t: &str| {
            if t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                u64::from_str_radix(t, 16).map(Lsn).map_err(|_| err())
            } else {
                Err(err())
            }
        };
        match lsns.split_once('-') {
            Some((a, b)) => {
                let lsn_range = lsn(a)?..lsn(b)?;
                if lsn_range.start >= lsn_range.end {
                    return Err(err());
                }
                Ok(LayerName::Delta {
                    key_range,
                    lsn_range,
                })
            }
            None => Ok(LayerName::Image {
                key_range,
                lsn: lsn(lsns)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let delta = LayerName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(0x1696070)..Lsn(0x16960E9),
        };
        let text = delta.to_string();
        assert_eq!(
            text,
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016960E9"
        );
        assert_eq!(text.parse::<LayerName>().unwrap(), delta);
        let image = LayerName::Image {
            key_range: Key::MIN..Key::MIN.next(),
            lsn: Lsn(5),
        };
        assert_eq!(image.to_string().parse::<LayerName>().unwrap(), image);
        assert_eq!(image.lsn_range(), Lsn(5)..Lsn(6));
        for bad in [
            "",
            "x__0000000000000001",
            "000000000000000000000000000000000000-000000000000000000000000000000000000__0000000000000001",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000002-0000000000000001",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__01",
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000001.tmp",
        ] {
            assert!(bad.parse::<LayerName>().is_err(), "{bad}");
        }
    }
}
