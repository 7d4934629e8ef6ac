//! Value types used by the config files: durations written the way operators write them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in humantime syntax (`"10 m"`, `"20 s"`, `"1 hr"`, `"7 days"`), as Neon's config spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    pub const fn from_micros(us: u64) -> Self {
        HumanDuration(Duration::from_micros(us))
    }

    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }

    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"10 s\", \"5 m\" or \"1 hr\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse()
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_neon_spellings() {
        for (text, secs) in [
            ("10 m", 600),
            ("20 s", 20),
            ("1 hr", 3600),
            ("7 days", 7 * 86400),
            ("300s", 300),
        ] {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap(),
                HumanDuration::from_secs(secs),
                "{text}"
            );
        }
        assert!("ten minutes".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn display_round_trips() {
        let d = HumanDuration::from_secs(7 * 86400 + 5);
        assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
    }
}
