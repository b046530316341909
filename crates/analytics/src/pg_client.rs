//! Connections to PostgreSQL that come back by themselves after the server restarts,
//! shared by the event store and the renderer's recordings (both in cluster mode).
//!
//! A `postgres` client whose server restarted looks open until it is used; the first
//! query then fails having run nothing. [`ReadConnection`] hides that from readers: it
//! drops a closed client, connects when it has none, and runs a query that found its
//! connection closed once more on a new one.

use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::error::StoreError;

/// How long opening a connection may take when the URL does not say, so a renderer whose
/// database is down answers quickly (`storage_failed`, 503) instead of hanging.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a `postgres://…` URL, with a connect timeout and an application name (seen in
/// `pg_stat_activity`) where the URL gives none.
///
/// # Errors
/// [`StoreError::InvalidQuery`] naming the store URL when it does not parse.
pub fn client_config(url: &str, application_name: &str) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|err| StoreError::InvalidQuery(format!("store url: {err}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    Ok(config)
}

/// Opens one connection without TLS (loopback and private networks; a TLS connector can be
/// passed here later without changing the callers).
///
/// # Errors
/// [`StoreError::Unavailable`] naming the hosts and the server's or the network's reason.
pub fn connect(config: &postgres::Config) -> Result<Client, StoreError> {
    config.connect(NoTls).map_err(|err| {
        let hosts = config.get_hosts();
        let why = match err.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => err.to_string(),
        };
        StoreError::Unavailable(format!("connect to postgresql {hosts:?}: {why}"))
    })
}

/// One reading connection, opened on demand and again after it broke, so dashboards and
/// renders never wait behind the writer and survive a database restart.
///
/// The `postgres` client blocks: use it from blocking threads only.
pub struct ReadConnection {
    config: postgres::Config,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for ReadConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConnection")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

impl ReadConnection {
    /// A reader for `config`, starting with `client` if one is already open (`None`
    /// connects on the first read).
    pub fn new(config: postgres::Config, client: Option<Client>) -> Self {
        ReadConnection {
            config,
            client: Mutex::new(client),
        }
    }

    /// Where this reader connects, for writers that share its settings.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// Runs `query` on the connection, opening it first if it is missing or broke; a query
    /// that found its connection closed (the server restarted) ran nothing, so it runs once
    /// more on a new connection.
    ///
    /// # Errors
    /// The query's error, or [`StoreError::Unavailable`] when no connection can be opened.
    pub fn read<T>(
        &self,
        mut query: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.as_ref().is_some_and(Client::is_closed) {
            *slot = None;
        }
        let client = match &mut *slot {
            Some(client) => client,
            None => slot.insert(connect(&self.config)?),
        };
        match query(client) {
            Err(StoreError::Unavailable(_)) if client.is_closed() => {
                *slot = None;
                query(slot.insert(connect(&self.config)?))
            }
            result => result,
        }
    }
}
