//! Which engine keeps tracked-site events: the embedded SQLite file in `--data-dir`, or,
//! with `--store postgres://…` in a renderer built with the `cluster` feature, a
//! PostgreSQL database that several renderers share.

use std::sync::Arc;

use ::analytics::{SqliteConfig, SqliteStore, Store, StoreError};

use crate::config::Config;

/// The event store's file in `--data-dir`.
pub(crate) const ANALYTICS_FILE: &str = "analytics.sqlite";

/// The engine behind the event store, kept concrete beside the `dyn Store` every other
/// part uses, for what only an engine knows (its size on disk).
#[derive(Debug, Clone)]
pub(crate) enum EventStore {
    /// One file in `--data-dir`.
    Sqlite(Arc<SqliteStore>),
    /// A shared database (`--store postgres://…`).
    #[cfg(feature = "cluster")]
    Postgres(Arc<::analytics::PostgresStore>),
}

impl EventStore {
    /// Opens the store `--store` names, or the SQLite file in `--data-dir` without it.
    ///
    /// Blocks (PostgreSQL's client runs a runtime of its own): call it off the async
    /// workers.
    ///
    /// # Errors
    /// The store cannot be opened, `--store` names an engine this build does not have,
    /// or its scheme is unknown.
    pub fn open(config: &Config) -> Result<Self, crate::Error> {
        let Some(url) = &config.store else {
            let path = config.data_dir.join(ANALYTICS_FILE);
            let store = SqliteStore::open(&SqliteConfig {
                path: path.clone(),
                fsync: config.fsync,
                max_bytes: config.max_store_bytes,
                heat_flush_events: config.store_heat_flush_events,
                cache_mib: config.store_cache_mib,
                mmap_mib: 0,
            })
            .map_err(|source| crate::Error::Store {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(EventStore::Sqlite(Arc::new(store)));
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(crate::Error::StoreUrl {
                url: redact(url),
                why: "--store takes a postgres:// or postgresql:// URL (leave it out for the \
                      embedded SQLite file in --data-dir)"
                    .into(),
            });
        }
        Self::open_postgres(url)
    }

    #[cfg(feature = "cluster")]
    fn open_postgres(url: &str) -> Result<Self, crate::Error> {
        let store = ::analytics::PostgresStore::open(&::analytics::PostgresConfig::at(url))
            .map_err(|source| crate::Error::Store {
                path: redact(url),
                source,
            })?;
        Ok(EventStore::Postgres(Arc::new(store)))
    }

    #[cfg(not(feature = "cluster"))]
    fn open_postgres(url: &str) -> Result<Self, crate::Error> {
        Err(crate::Error::StoreUrl {
            url: redact(url),
            why: "this renderer was built without the cluster feature; build one with \
                  `cargo build --release --features cluster -p renderer`"
                .into(),
        })
    }

    /// The store, for everything that only stores and queries.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            EventStore::Sqlite(store) => store.clone(),
            #[cfg(feature = "cluster")]
            EventStore::Postgres(store) => store.clone(),
        }
    }

    /// Bytes the store takes, for the `renderer_store_bytes` gauge.
    ///
    /// # Errors
    /// The engine's error.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        match self {
            EventStore::Sqlite(store) => store.size_bytes(),
            #[cfg(feature = "cluster")]
            EventStore::Postgres(store) => store.size_bytes(),
        }
    }

    /// Whether the size is cheap enough to read after every commit (a file's page count);
    /// a shared database's is read with each retention pass instead.
    pub fn sized_per_commit(&self) -> bool {
        matches!(self, EventStore::Sqlite(_))
    }
}

/// The URL without its password, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(idx) => rest.split_at(idx),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/heatmaps"),
            "postgres://app:***@db:5432/heatmaps"
        );
        assert_eq!(
            redact("postgres://app@db/heatmaps"),
            "postgres://app@db/heatmaps"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn an_unknown_scheme_is_refused_naming_the_flag() {
        let config = Config {
            store: Some("mysql://db/x".into()),
            ..Config::default()
        };
        let err = EventStore::open(&config).expect_err("refused");
        assert!(err.to_string().contains("--store"), "{err}");
    }

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn a_postgres_url_without_the_feature_names_the_feature() {
        let config = Config {
            store: Some("postgres://u:pw@127.0.0.1:1/x".into()),
            ..Config::default()
        };
        let err = EventStore::open(&config).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("cluster feature"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
