//! The PostgreSQL engine against the conformance suite, on servers the tests start
//! themselves (`testkit::postgres`): each test has its own server, and each case of the
//! suite its own fresh database on it, so nothing is shared between tests or cases.
//!
//! The durability cases go further than a reopen: every [`Reopen::open`] crashes the
//! server (`pg_ctl stop -m immediate`) and starts it again, so what is checked is what
//! PostgreSQL's crash recovery keeps, with `fsync` on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use analytics::conformance::{self, sample_events, Reopen, Rng, BASE_MS};
use analytics::{
    Event, Filter, PostgresConfig, PostgresStore, Range, RawSelection, Store, StoreError,
};
use testkit::postgres::{Postgres, PostgresOptions};

fn open(url: &str) -> Box<dyn Store> {
    Box::new(PostgresStore::open(&PostgresConfig::at(url)).expect("open the postgres store"))
}

fn start(options: PostgresOptions) -> Postgres {
    match Postgres::start_with(options) {
        Ok(server) => server,
        Err(err) => panic!("cannot start a postgresql server for this test: {err:#}"),
    }
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let server = start(PostgresOptions::default());
    let n = AtomicU64::new(0);
    conformance::run_all(&mut || {
        let name = format!("suite_{}", n.fetch_add(1, Ordering::Relaxed));
        open(&server.create_database(&name).expect("create a database"))
    });
}

/// One database on a server that every reopen crashes and starts again.
struct CrashingServer {
    server: Postgres,
    url: String,
    cramped: bool,
    crashes: usize,
}

impl CrashingServer {
    fn crash_and_restart(&mut self) {
        self.server.crash().expect("crash the server");
        self.server
            .restart()
            .expect("start the server after a crash");
        self.crashes += 1;
    }
}

impl Reopen for CrashingServer {
    fn open(&mut self) -> Box<dyn Store> {
        if self.cramped {
            // Room for crash recovery, the checks and the resends that follow.
            self.server
                .limit_cramped(256 << 20)
                .expect("grow the tablespace");
        }
        self.crash_and_restart();
        open(&self.url)
    }

    fn open_cramped(&mut self, bytes: u64) -> Box<dyn Store> {
        // Crash recovery writes the pages the crash left only in memory, so it gets room
        // (a server whose disk is still full does not start: that is the operator's
        // problem, not the store's); then a checkpoint puts every page on
        // the disk, so the
        // limit below counts all that is there.
        self.server
            .limit_cramped(256 << 20)
            .expect("grow the tablespace");
        self.crash_and_restart();
        // The store connects before the limit: a new connection writes a cache file
        // into the database's folder, and with no room that fails the connect instead
        // of the write this test is about.
        let store = open(&self.url);
        self.server
            .psql("postgres", "CHECKPOINT")
            .expect("checkpoint after recovery");
        self.server
            .limit_cramped(bytes)
            .expect("limit the tablespace");
        store
    }
}

#[test]
fn postgres_keeps_exactly_what_it_acknowledged_through_a_full_disk() {
    let mut server = start(PostgresOptions { fsync: true });
    let url = server
        .cramped_url("cramped_events")
        .expect("a database on a size-limited tablespace");
    // Create the schema while there is room, so the rounds fail inside ingests.
    server.limit_cramped(64 << 20).expect("room for the schema");
    drop(open(&url));
    let mut harness = CrashingServer {
        server,
        url,
        cramped: true,
        crashes: 0,
    };
    let failures = conformance::acknowledged_batches_survive_a_full_disk_and_a_reopen(&mut harness);
    eprintln!(
        "injected {failures} full-tablespace failures and {} server crashes; acknowledged = \
         recovered after each",
        harness.crashes
    );
    assert!(
        failures >= 10,
        "the test must hit the limit many times, hit it {failures}"
    );
}

#[test]
fn postgres_aggregates_survive_a_server_crash() {
    let server = start(PostgresOptions { fsync: true });
    let url = server.url();
    let mut harness = CrashingServer {
        server,
        url,
        cramped: false,
        crashes: 0,
    };
    conformance::aggregates_survive_a_reopen(&mut harness);
    assert!(harness.crashes >= 3);
}

/// The server dies while a writer is ingesting: every acknowledged batch is there after
/// the restart, the failed ones say "try again", the same store reconnects by itself, and
/// resending everything counts every event once.
#[test]
fn postgres_loses_nothing_acknowledged_when_the_server_crashes_mid_ingest() {
    let mut server = start(PostgresOptions { fsync: true });
    let store = PostgresStore::open(&PostgresConfig::at(&server.url())).expect("open");
    let events = sample_events(&mut Rng::new(21), 40_000, BASE_MS, 2 * 86_400_000);
    let batches: Vec<&[Event]> = events.chunks(100).collect();
    let crashed = AtomicBool::new(false);
    let (acknowledged, refused) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let (mut acknowledged, mut refused) = (Vec::new(), 0usize);
            for batch in &batches {
                match store.ingest(batch) {
                    Ok(ingested) => {
                        assert_eq!(ingested.stored as usize, batch.len());
                        acknowledged.extend_from_slice(batch);
                    }
                    Err(err) => {
                        assert!(err.is_retryable(), "a crash is retryable: {err}");
                        refused += 1;
                        if crashed.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            }
            (acknowledged, refused)
        });
        // Crash once a few batches are in, while the writer is still sending.
        let deadline = std::time::Instant::now() + testkit::DEADLINE;
        loop {
            let stored: i64 = server
                .psql("heatmap", "SELECT COUNT(*) FROM events")
                .expect("count")
                .parse()
                .expect("a number");
            if stored >= 2_000 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no batches stored");
        }
        server.crash().expect("crash the server");
        crashed.store(true, Ordering::SeqCst);
        writer.join().expect("the writer thread")
    });
    assert!(refused >= 1, "the crash failed an ingest");
    assert!(
        acknowledged.len() < events.len(),
        "the crash came mid-stream"
    );
    server.restart().expect("restart");
    // The same store: its broken connections are opened again on the next call.
    let read = store
        .events(
            Range::all(),
            &Filter::default(),
            &RawSelection::default(),
            usize::MAX >> 1,
        )
        .expect("read after the restart");
    // The batch in flight at the crash may have committed without its answer arriving:
    // every acknowledged event is there, nothing else but that one batch.
    assert!(read.len() >= acknowledged.len(), "acknowledged events lost");
    assert!(
        read.len() <= acknowledged.len() + 100,
        "unsent events stored"
    );
    let stored_keys: std::collections::HashSet<_> = read
        .iter()
        .map(|event| (event.session.clone(), event.seq))
        .collect();
    for event in &acknowledged {
        assert!(stored_keys.contains(&(event.session.clone(), event.seq)));
    }
    let mut stored = read.len() as u64;
    for batch in &batches {
        stored += store.ingest(batch).expect("resend").stored;
    }
    assert_eq!(stored, events.len() as u64);
    let totals = store
        .totals(Range::all(), &Filter::default(), 10)
        .expect("totals");
    assert_eq!(totals.events, events.len() as u64, "every event once");
}

#[test]
fn postgres_migrates_once_and_refuses_a_newer_schema() {
    let server = start(PostgresOptions::default());
    let url = server.url();
    // Two renderers starting together: the advisory lock lets one migrate.
    std::thread::scope(|scope| {
        let first = scope.spawn(|| PostgresStore::open(&PostgresConfig::at(&url)).map(drop));
        let second = scope.spawn(|| PostgresStore::open(&PostgresConfig::at(&url)).map(drop));
        first.join().expect("thread").expect("first open");
        second.join().expect("thread").expect("second open");
    });
    let versions = server
        .psql(
            "heatmap",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version",
        )
        .expect("versions");
    // Each version is recorded once though both opened the database.
    assert_eq!(versions, "1,2,3");
    server
        .psql("heatmap", "INSERT INTO schema_version VALUES (99)")
        .expect("a newer version");
    let err = PostgresStore::open(&PostgresConfig::at(&url)).expect_err("refused");
    assert!(
        matches!(&err, StoreError::Other(text) if text.contains("schema version 99")),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_unavailable_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/heatmap?connect_timeout=2");
    let err = PostgresStore::open(&PostgresConfig::at(&url)).expect_err("nothing listens");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
}
