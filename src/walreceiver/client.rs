//! A physical replication connection to PostgreSQL 15 (a primary, or anything serving vanilla walsender
//! replication): startup with `replication=true`, authentication (trust, cleartext, MD5, SCRAM-SHA-256),
//! then the replication commands we use, as simple queries.
//!
//! State: the connection is *idle* after ReadyForQuery. A command may only start when idle; an error that
//! leaves the server mid-exchange (a broken frame, EOF, a refused base backup) leaves it not idle, and every
//! later command fails with [`ReplicationError::Broken`]. Server errors on commands (ErrorResponse, then
//! ReadyForQuery) leave it idle and usable. [`start_replication`](ReplicationConnection::start_replication)
//! consumes the connection: it becomes a [`WalStream`].
//!
//! Commands have no timeout of their own (a fast-checkpoint base backup can take long); wrap them in
//! `tokio::time::timeout` where needed. Only the handshake is bounded by `connect`'s timeout.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use super::connstr::ConnConfig;
use super::error::{ReplicationError, SQLSTATE_DUPLICATE_OBJECT};
use super::stream::WalStream;
use super::wire::{
    BackendMessage, ConnRead, ConnWrite, MessageReader, SharedWriter, column_names, data_row,
    notice_text, server_error, unexpected,
};
use crate::pg::Lsn;

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId {
    /// The cluster's system identifier, in decimal as the server prints it.
    pub systemid: String,
    pub timeline: u32,
    /// The server's current flush position.
    pub xlogpos: Lsn,
    /// The database of a logical replication connection; `None` for physical ones.
    pub dbname: Option<String>,
}

/// One result set of a simple query, in text format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

pub struct ReplicationConnection {
    pub(super) reader: MessageReader<ConnRead>,
    pub(super) writer: SharedWriter<ConnWrite>,
    /// True after ReadyForQuery, false while a command is in flight (or was left unfinished).
    pub(super) idle: bool,
    parameters: HashMap<String, String>,
    backend_pid: Option<i32>,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("backend_pid", &self.backend_pid)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl ReplicationConnection {
    /// Connects and authenticates. `application_name` (shown in `pg_stat_replication`) is used unless empty,
    /// then the connection string's. The handshake is bounded by `timeout`, or by the string's
    /// `connect_timeout` when that is shorter.
    pub async fn connect(
        connstr: &str,
        application_name: &str,
        timeout: Duration,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let mut config = ConnConfig::parse(connstr)?;
        if !application_name.is_empty() {
            config.application_name = Some(application_name.to_string());
        }
        let limit = config.connect_timeout.map_or(timeout, |t| t.min(timeout));
        tokio::time::timeout(limit, Self::handshake(&config))
            .await
            .map_err(|_| ReplicationError::Timeout {
                after: limit,
                during: "connecting and authenticating",
            })?
    }

    async fn handshake(config: &ConnConfig) -> Result<ReplicationConnection, ReplicationError> {
        let addr = config.addr();
        let tcp = TcpStream::connect((config.host.as_str(), config.port))
            .await
            .map_err(|source| ReplicationError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let (rd, wr) = super::tls::negotiate(tcp, config).await?;
        let mut conn = ReplicationConnection {
            reader: MessageReader::new(rd),
            writer: SharedWriter::new(wr),
            idle: false,
            parameters: HashMap::new(),
            backend_pid: None,
        };
        let mut params = vec![
            ("user", config.user.as_str()),
            ("database", config.dbname.as_str()),
            ("replication", "true"),
        ];
        if let Some(app) = &config.application_name {
            params.push(("application_name", app));
        }
        if let Some(options) = &config.options {
            params.push(("options", options));
        }
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).map_err(nul_in_argument)?;
        conn.writer.send(&buf).await?;
        conn.authenticate(config).await?;
        conn.read_until_ready("startup").await?;
        tracing::debug!(%addr, pid = ?conn.backend_pid, "replication connection established");
        Ok(conn)
    }

    async fn authenticate(&mut self, config: &ConnConfig) -> Result<(), ReplicationError> {
        loop {
            let m = self.reader.next().await?;
            let BackendMessage::Std(msg) = m else {
                return Err(unexpected(&m, "authentication"));
            };
            let mut buf = BytesMut::new();
            match msg {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password(config)?.as_bytes(), &mut buf)
                        .map_err(nul_in_argument)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(
                        config.user.as_bytes(),
                        password(config)?.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut buf)
                        .map_err(nul_in_argument)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mechanisms: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_string()))
                        .collect()
                        .map_err(|e| {
                            ReplicationError::protocol(format!("malformed SASL request: {e}"))
                        })?;
                    return self.scram(config, &mechanisms).await;
                }
                Message::ErrorResponse(body) => return Err(server_error(&body)),
                Message::NoticeResponse(_) => continue,
                other => {
                    return Err(ReplicationError::UnsupportedAuth(format!(
                        "the server asks for {}, which is not supported (use trust, password, md5 or \
                         scram-sha-256)",
                        super::wire::describe(&BackendMessage::Std(other))
                    )));
                }
            }
            self.writer.send(&buf).await?;
        }
    }

    /// SCRAM-SHA-256 without channel binding (we have no TLS).
    async fn scram(
        &mut self,
        config: &ConnConfig,
        mechanisms: &[String],
    ) -> Result<(), ReplicationError> {
        const MECHANISM: &str = "SCRAM-SHA-256";
        if !mechanisms.iter().any(|m| m == MECHANISM) {
            return Err(ReplicationError::UnsupportedAuth(format!(
                "the server offers SASL mechanisms {mechanisms:?}; only {MECHANISM} is supported"
            )));
        }
        let mut scram = sasl::ScramSha256::new(
            password(config)?.as_bytes(),
            sasl::ChannelBinding::unsupported(),
        );
        let mut buf = BytesMut::new();
        frontend::sasl_initial_response(MECHANISM, scram.message(), &mut buf)?;
        self.writer.send(&buf).await?;
        let auth_err = |e: std::io::Error| ReplicationError::Auth(format!("SCRAM: {e}"));
        match self.next_auth_message().await? {
            Message::AuthenticationSaslContinue(body) => {
                scram.update(body.data()).map_err(auth_err)?
            }
            _ => {
                return Err(ReplicationError::protocol(
                    "expected AuthenticationSASLContinue",
                ));
            }
        }
        buf.clear();
        frontend::sasl_response(scram.message(), &mut buf)?;
        self.writer.send(&buf).await?;
        match self.next_auth_message().await? {
            Message::AuthenticationSaslFinal(body) => {
                scram.finish(body.data()).map_err(auth_err)?
            }
            _ => {
                return Err(ReplicationError::protocol(
                    "expected AuthenticationSASLFinal",
                ));
            }
        }
        match self.next_auth_message().await? {
            Message::AuthenticationOk => Ok(()),
            _ => Err(ReplicationError::protocol(
                "expected AuthenticationOk after SCRAM",
            )),
        }
    }

    /// The next authentication message; an ErrorResponse becomes the server's error.
    async fn next_auth_message(&mut self) -> Result<Message, ReplicationError> {
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    return Err(server_error(&body));
                }
                BackendMessage::Std(Message::NoticeResponse(_)) => continue,
                BackendMessage::Std(m) => return Ok(m),
                m => return Err(unexpected(&m, "authentication")),
            }
        }
    }

    /// Reads ParameterStatus, BackendKeyData and notices until ReadyForQuery.
    async fn read_until_ready(&mut self, during: &str) -> Result<(), ReplicationError> {
        loop {
            let m = self.reader.next().await?;
            match &m {
                BackendMessage::Std(Message::ReadyForQuery(_)) => {
                    self.idle = true;
                    return Ok(());
                }
                BackendMessage::Std(Message::ParameterStatus(body)) => {
                    if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                        self.parameters.insert(name.to_string(), value.to_string());
                    }
                }
                BackendMessage::Std(Message::BackendKeyData(body)) => {
                    self.backend_pid = Some(body.process_id());
                }
                BackendMessage::Std(Message::NoticeResponse(body)) => {
                    tracing::info!(notice = notice_text(body), "server notice");
                }
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    return Err(server_error(body));
                }
                _ => return Err(unexpected(&m, during)),
            }
        }
    }

    /// A run-time parameter the server reported (`server_version`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The walsender's process id.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Sends `sql` as a simple query once the connection is idle.
    pub(super) async fn send_query(&mut self, sql: &str) -> Result<(), ReplicationError> {
        if !self.idle {
            return Err(ReplicationError::Broken);
        }
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(nul_in_argument)?;
        self.idle = false;
        self.writer.send(&buf).await
    }

    /// Runs a simple query that returns result sets (no COPY). A server error is returned after the
    /// server's ReadyForQuery, so the connection stays usable.
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<ResultSet>, ReplicationError> {
        self.send_query(sql).await?;
        let mut sets = Vec::new();
        let mut current: Option<ResultSet> = None;
        let mut error = None;
        loop {
            let m = self.reader.next().await?;
            let BackendMessage::Std(msg) = &m else {
                return Err(unexpected(&m, sql));
            };
            match msg {
                Message::RowDescription(body) => {
                    current = Some(ResultSet {
                        columns: column_names(body)?,
                        rows: Vec::new(),
                    });
                }
                Message::DataRow(body) => match current.as_mut() {
                    Some(set) => set.rows.push(data_row(body)?),
                    None => return Err(unexpected(&m, sql)),
                },
                Message::CommandComplete(_) => sets.extend(current.take()),
                Message::EmptyQueryResponse | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(body) => {
                    tracing::info!(notice = notice_text(body), "server notice");
                }
                Message::ErrorResponse(body) => error = Some(server_error(body)),
                Message::ReadyForQuery(_) => {
                    self.idle = true;
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(sets),
                    };
                }
                _ => return Err(unexpected(&m, sql)),
            }
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemId, ReplicationError> {
        let sets = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(&sets, "IDENTIFY_SYSTEM", 4)?;
        Ok(SystemId {
            systemid: required(&row[0], "IDENTIFY_SYSTEM systemid")?.to_string(),
            timeline: parse_col(&row[1], "IDENTIFY_SYSTEM timeline")?,
            xlogpos: parse_col(&row[2], "IDENTIFY_SYSTEM xlogpos")?,
            dbname: row[3].clone(),
        })
    }

    /// `CREATE_REPLICATION_SLOT <name> PHYSICAL [RESERVE_WAL]`. Returns the slot's restart LSN when WAL
    /// was reserved, `None` otherwise. A slot of that name existing is [`ReplicationError::SlotExists`].
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        reserve_wal: bool,
    ) -> Result<Option<Lsn>, ReplicationError> {
        check_slot_name(name)?;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {name} PHYSICAL{}",
            if reserve_wal { " RESERVE_WAL" } else { "" }
        );
        let sets = match self.simple_query(&sql).await {
            Err(ReplicationError::Server { code, .. }) if code == SQLSTATE_DUPLICATE_OBJECT => {
                return Err(ReplicationError::SlotExists {
                    slot: name.to_string(),
                });
            }
            other => other?,
        };
        let row = single_row(&sets, "CREATE_REPLICATION_SLOT", 4)?;
        // A physical slot's consistent_point is 0/0: the reserved position is its restart_lsn.
        let consistent: Lsn = parse_col(&row[1], "CREATE_REPLICATION_SLOT consistent_point")?;
        if consistent.is_valid() {
            return Ok(Some(consistent));
        }
        if reserve_wal {
            return self.read_slot(name).await;
        }
        Ok(None)
    }

    /// `READ_REPLICATION_SLOT <name>`: the slot's restart LSN; `None` if there is no such slot or it has
    /// reserved no WAL yet.
    pub async fn read_slot(&mut self, name: &str) -> Result<Option<Lsn>, ReplicationError> {
        check_slot_name(name)?;
        let sets = self
            .simple_query(&format!("READ_REPLICATION_SLOT {name}"))
            .await?;
        let row = single_row(&sets, "READ_REPLICATION_SLOT", 3)?;
        row[1]
            .as_deref()
            .map(|s| parse_text(s, "READ_REPLICATION_SLOT restart_lsn"))
            .transpose()
    }

    /// `DROP_REPLICATION_SLOT <name> [WAIT]`; with `wait`, waits until the slot is no longer active instead
    /// of failing with SQLSTATE 55006.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), ReplicationError> {
        check_slot_name(name)?;
        let sql = format!(
            "DROP_REPLICATION_SLOT {name}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&sql).await.map(|_| ())
    }

    /// `START_REPLICATION [SLOT s] PHYSICAL X/Y [TIMELINE n]` (timeline 0: the server's current one). On
    /// success the connection is in COPY BOTH mode and becomes a [`WalStream`].
    pub async fn start_replication(
        mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: u32,
    ) -> Result<WalStream, ReplicationError> {
        let mut sql = String::from("START_REPLICATION ");
        if let Some(slot) = slot {
            check_slot_name(slot)?;
            sql.push_str(&format!("SLOT {slot} "));
        }
        sql.push_str(&format!("PHYSICAL {start}"));
        if timeline != 0 {
            sql.push_str(&format!(" TIMELINE {timeline}"));
        }
        self.send_query(&sql).await?;
        loop {
            let m = self.reader.next().await?;
            match &m {
                BackendMessage::CopyBothResponse => {
                    return Ok(WalStream::new(self.reader, self.writer, start));
                }
                BackendMessage::Std(Message::NoticeResponse(body)) => {
                    tracing::info!(notice = notice_text(body), "server notice");
                }
                BackendMessage::Std(Message::ParameterStatus(_)) => {}
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    return Err(server_error(body));
                }
                // The start point is the very end of an old timeline: the server answers with the next
                // timeline instead of streaming. Following timeline switches is not supported yet.
                BackendMessage::Std(Message::RowDescription(_)) => {
                    return Err(ReplicationError::Unsupported(format!(
                        "following a timeline switch (START_REPLICATION at {start} on timeline {timeline} \
                         is the end of that timeline)"
                    )));
                }
                _ => return Err(unexpected(&m, "START_REPLICATION")),
            }
        }
    }
}

fn password(config: &ConnConfig) -> Result<&str, ReplicationError> {
    config.password.as_deref().ok_or_else(|| {
        ReplicationError::Auth(format!(
            "the server asks user {:?} for a password and the connection string has none",
            config.user
        ))
    })
}

/// postgres-protocol's writers fail only on a NUL byte inside a string.
fn nul_in_argument(e: std::io::Error) -> ReplicationError {
    ReplicationError::InvalidArgument(e.to_string())
}

/// Slot names as PostgreSQL allows them (ReplicationSlotValidateName): 1 to 63 of `[a-z0-9_]`. Checking
/// here also keeps the name from changing the command it is spliced into.
pub(crate) fn check_slot_name(name: &str) -> Result<(), ReplicationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::InvalidArgument(format!(
            "replication slot name {name:?}: use 1 to 63 lowercase letters, digits and underscores"
        )))
    }
}

/// The one row of a command's one result set, checked to have `ncols` columns.
pub(crate) fn single_row<'a>(
    sets: &'a [ResultSet],
    command: &str,
    ncols: usize,
) -> Result<&'a [Option<String>], ReplicationError> {
    match sets {
        [set] if set.rows.len() == 1 && set.rows[0].len() == ncols => Ok(&set.rows[0]),
        _ => Err(ReplicationError::protocol(format!(
            "{command} should return one row of {ncols} columns, got {:?}",
            sets.iter()
                .map(|s| (s.rows.len(), s.columns.len()))
                .collect::<Vec<_>>()
        ))),
    }
}

fn required<'a>(col: &'a Option<String>, what: &str) -> Result<&'a str, ReplicationError> {
    col.as_deref()
        .ok_or_else(|| ReplicationError::protocol(format!("{what} is NULL")))
}

pub(crate) fn parse_text<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ReplicationError> {
    s.parse()
        .map_err(|_| ReplicationError::protocol(format!("{what}: cannot parse {s:?}")))
}

pub(crate) fn parse_col<T: std::str::FromStr>(
    col: &Option<String>,
    what: &str,
) -> Result<T, ReplicationError> {
    parse_text(required(col, what)?, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        for ok in ["a", "pageserver_1", &"x".repeat(63)] {
            check_slot_name(ok).unwrap();
        }
        for bad in ["", "A", "a b", "a;DROP", "é", &"x".repeat(64)] {
            assert!(matches!(
                check_slot_name(bad),
                Err(ReplicationError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn single_row_checks_shape() {
        let set = ResultSet {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Some("1".into()), None]],
        };
        assert_eq!(
            single_row(std::slice::from_ref(&set), "X", 2)
                .unwrap()
                .len(),
            2
        );
        assert!(single_row(std::slice::from_ref(&set), "X", 3).is_err());
        assert!(single_row(&[], "X", 2).is_err());
        assert!(parse_col::<u32>(&None, "t").is_err());
        assert!(parse_col::<u32>(&Some("x".into()), "t").is_err());
    }
}
