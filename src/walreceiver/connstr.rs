//! libpq connection strings: `key=value` pairs (`host=h port=5432 user=u password='it''s'`) and URLs
//! (`postgres://user:pass@host:port/db?application_name=x`). Only what a TCP replication connection needs is
//! accepted; an unknown key is an error naming it, as libpq does.

use std::fmt;
use std::time::Duration;

use super::error::ReplicationError;

/// Where and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Sent in the startup message; a physical replication connection does not use it.
    pub dbname: String,
    pub password: Option<String>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// The `options` startup parameter (command-line options for the backend).
    pub options: Option<String>,
    pub sslmode: SslMode,
    /// CA certificates (PEM) that the server's chain must lead to.
    pub sslrootcert: Option<std::path::PathBuf>,
}

/// libpq's `sslmode`, with libpq's default `prefer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &self.options)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

fn err(msg: impl Into<String>) -> ReplicationError {
    ReplicationError::ConnStr { msg: msg.into() }
}

impl ConnConfig {
    /// Parses either form; `user` is required (we do not guess the OS user), `host` defaults to
    /// `localhost`, `port` to 5432, `dbname` to the user name.
    pub fn parse(s: &str) -> Result<ConnConfig, ReplicationError> {
        let pairs = parse_pairs(s)?;
        let mut b = Builder::default();
        for (k, v) in pairs {
            b.set(&k, v)?;
        }
        b.build()
    }

    /// `host:port` for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Default)]
struct Builder {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    dbname: Option<String>,
    password: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<Duration>,
    options: Option<String>,
    sslmode: Option<SslMode>,
    sslrootcert: Option<std::path::PathBuf>,
}

impl Builder {
    fn set(&mut self, key: &str, value: String) -> Result<(), ReplicationError> {
        match key {
            "host" | "hostaddr" => {
                if value.starts_with('/') || value.starts_with('@') {
                    return Err(err(format!(
                        "{key}={value:?}: Unix-domain sockets are not supported, use a TCP address"
                    )));
                }
                if value.contains(',') {
                    return Err(err(format!("{key}={value:?}: only one host is supported")));
                }
                if !value.is_empty() {
                    self.host = Some(value);
                }
            }
            "port" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err(format!("invalid port {value:?}")))?;
                self.port = Some(port);
            }
            "user" => self.user = Some(value).filter(|v| !v.is_empty()),
            "dbname" => self.dbname = Some(value).filter(|v| !v.is_empty()),
            "password" => self.password = Some(value),
            "application_name" => self.application_name = Some(value),
            "options" => self.options = Some(value).filter(|v| !v.is_empty()),
            "connect_timeout" => {
                let secs = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| err(format!("invalid connect_timeout {value:?}")))?;
                // As libpq: zero or negative means no timeout; below 2 s is raised to 2 s.
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64));
            }
            "sslmode" => {
                self.sslmode = Some(match value.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" => SslMode::Allow,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => {
                        return Err(err(format!(
                            "invalid sslmode {value:?}: disable, allow, prefer, require, verify-ca or \
                             verify-full"
                        )));
                    }
                })
            }
            "sslrootcert" => {
                self.sslrootcert = Some(value).filter(|v| !v.is_empty()).map(Into::into);
            }
            _ => return Err(err(format!("unknown connection option {key:?}"))),
        }
        Ok(())
    }

    fn build(self) -> Result<ConnConfig, ReplicationError> {
        let user = self.user.ok_or_else(|| err("user is required"))?;
        let mut sslmode = self.sslmode.unwrap_or_default();
        match (sslmode, &self.sslrootcert) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(err(
                    "sslmode=verify-ca and verify-full need sslrootcert (a file of CA certificates)",
                ));
            }
            // As libpq: with a root certificate given, require verifies the chain.
            (SslMode::Require, Some(_)) => sslmode = SslMode::VerifyCa,
            _ => {}
        }
        Ok(ConnConfig {
            host: self.host.unwrap_or_else(|| "localhost".to_string()),
            port: self.port.unwrap_or(5432),
            dbname: self.dbname.unwrap_or_else(|| user.clone()),
            user,
            password: self.password,
            application_name: self.application_name,
            connect_timeout: self.connect_timeout,
            options: self.options,
            sslmode,
            sslrootcert: self.sslrootcert,
        })
    }
}

/// The key-value pairs of either form.
fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, ReplicationError> {
    let trimmed = s.trim();
    match trimmed
        .strip_prefix("postgresql://")
        .or_else(|| trimmed.strip_prefix("postgres://"))
    {
        Some(rest) => parse_url(rest),
        None => parse_key_values(trimmed),
    }
}

/// `s` for display (timeline detail, logs): unchanged when it has no password; else its pairs as
/// `key='value'` with the password shown as `********`.
pub fn redacted(s: &str) -> String {
    match parse_pairs(s) {
        Ok(pairs) if !pairs.iter().any(|(k, _)| k == "password") => s.to_string(),
        Ok(pairs) => pairs
            .iter()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "********".to_string()
                } else {
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                };
                format!("{k}='{v}'")
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "<hidden: the connection string does not parse>".to_string(),
    }
}

/// `key = value` pairs separated by whitespace; values may be single-quoted; `\` escapes the next character.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, ReplicationError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(err(format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(err(format!("unterminated quoted value of {key:?}"))),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(err(format!("unterminated quoted value of {key:?}"))),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// The part of a URL after `postgres://`: `[user[:password]@][host][:port][/dbname][?k=v&...]`.
fn parse_url(rest: &str) -> Result<Vec<(String, String)>, ReplicationError> {
    let mut out = Vec::new();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            out.push(("user".to_string(), percent_decode(user, "user")?));
            if let Some(p) = password {
                out.push(("password".to_string(), percent_decode(p, "password")?));
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| err("unterminated [ in the URL's host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| err(format!("unexpected {p:?} after the URL's host")))?,
            ),
        };
        (host.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode(h, "host")?, Some(p)),
            None => (percent_decode(hostport, "host")?, None),
        }
    };
    if !host.is_empty() {
        out.push(("host".to_string(), host));
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.push(("port".to_string(), p.to_string()));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_string(), percent_decode(db, "dbname")?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| err("missing \"=\" in a URL parameter"))?;
        let k = percent_decode(k, "parameter name")?;
        let v = percent_decode(v, &format!("parameter {k}"))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Decodes `%XX` escapes of the URL's `part` (named in errors; the value never is: it may be a password).
fn percent_decode(s: &str, part: &str) -> Result<String, ReplicationError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| err(format!("invalid percent-encoding in the URL's {part}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err(format!("the URL's {part} is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_for_display() {
        let plain = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
        assert_eq!(redacted(plain), plain);
        assert_eq!(
            redacted("host=h user=u password='it\\'s secret' dbname=d"),
            "host='h' user='u' password='********' dbname='d'"
        );
        let url = redacted("postgres://u:s3cret@h:5433/db");
        assert!(
            !url.contains("s3cret") && url.contains("password='********'"),
            "{url}"
        );
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert!(!redacted("password='unterminated").contains("unterminated"));
        assert_eq!(
            ConnConfig::parse(&redacted("host=h user=u password=x"))
                .unwrap()
                .password
                .as_deref(),
            Some("********")
        );
    }

    use super::*;

    #[test]
    fn key_values() {
        let c = ConnConfig::parse(
            "host=127.0.0.1 port = 5433 user=postgres dbname=db password='it\\'s a secret' \
             application_name=pageserver connect_timeout=1",
        )
        .unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5433);
        assert_eq!(c.user, "postgres");
        assert_eq!(c.dbname, "db");
        assert_eq!(c.password.as_deref(), Some("it's a secret"));
        assert_eq!(c.application_name.as_deref(), Some("pageserver"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn sslmodes_as_libpq() {
        let mode = |s: &str| ConnConfig::parse(s).unwrap().sslmode;
        assert_eq!(mode("user=u"), SslMode::Prefer);
        assert_eq!(mode("user=u sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("user=u sslmode=require"), SslMode::Require);
        assert_eq!(
            mode("user=u sslmode=require sslrootcert=/ca.crt"),
            SslMode::VerifyCa
        );
        assert_eq!(
            mode("user=u sslmode=verify-full sslrootcert=/ca.crt"),
            SslMode::VerifyFull
        );
    }

    #[test]
    fn defaults() {
        let c = ConnConfig::parse("user=u").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("localhost", 5432, "u")
        );
        assert!(c.password.is_none() && c.connect_timeout.is_none());
    }

    #[test]
    fn urls() {
        let c = ConnConfig::parse(
            "postgres://rep%40l:p%3Ass@db.example:6000/mydb?application_name=x&sslmode=disable",
        )
        .unwrap();
        assert_eq!(c.user, "rep@l");
        assert_eq!(c.password.as_deref(), Some("p:ss"));
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6000);
        assert_eq!(c.dbname, "mydb");
        assert_eq!(c.application_name.as_deref(), Some("x"));
        let c = ConnConfig::parse("postgresql://u@[::1]:5433").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5433));
        assert_eq!(c.addr(), "[::1]:5433");
        let c = ConnConfig::parse("postgresql://u@localhost").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("localhost", 5432, "u")
        );
    }

    #[test]
    fn errors_name_the_problem() {
        for (s, needle) in [
            ("host=h", "user is required"),
            ("user=u bogus=1", "\"bogus\""),
            ("user=u port=x", "invalid port"),
            ("user=u port=0", "invalid port"),
            ("user=u password='open", "unterminated"),
            ("user=u host", "missing \"=\""),
            ("user=u host=/var/run/postgresql", "Unix-domain"),
            ("user=u sslmode=on", "invalid sslmode"),
            ("user=u sslmode=verify-full", "sslrootcert"),
            ("postgres://u@h/db?x", "missing \"=\""),
            ("postgres://u@h/%zz", "percent"),
            ("postgres://u@[::1/db", "unterminated ["),
        ] {
            let e = ConnConfig::parse(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
    }
}
