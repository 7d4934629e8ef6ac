//! Tenant and timeline ids: 16 bytes, written as 32 lowercase hex digits (as Neon's `libs/utils/src/id.rs`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {0:?}: expected 32 hex digits")]
pub struct IdParseError(pub String);

macro_rules! id_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A random id.
            pub fn generate() -> $name {
                let mut b = [0u8; 16];
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let counter = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128;
                let mixed = nanos
                    ^ (counter.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
                    ^ ((std::process::id() as u128) << 64);
                b.copy_from_slice(&mixed.to_le_bytes());
                $name(b)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for byte in self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<$name, IdParseError> {
                parse_hex16(s)
                    .map($name)
                    .ok_or_else(|| IdParseError(s.to_string()))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

id_type!(
    TenantId,
    "A tenant: a set of timelines sharing config, redo processes and a directory."
);
id_type!(TimelineId, "A timeline (branch) of a tenant.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let id: TimelineId = "0123456789abcdef0123456789ABCDEF".parse().unwrap();
        assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
        assert!("0123".parse::<TenantId>().is_err());
        assert!(
            "g123456789abcdef0123456789abcdef"
                .parse::<TenantId>()
                .is_err()
        );
        assert_ne!(TenantId::generate(), TenantId::generate());
    }
}
