//! A PostgreSQL server of the test's own: Debian's binaries, a fresh cluster in a
//! temporary folder, a free loopback port, stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root (CI and the machines
//! here do) the folder is handed to `nobody` and every server command runs through
//! `runuser -u nobody`. Clients (`psql`, the store under test) connect over TCP on
//! 127.0.0.1 with `trust` authentication, so they may run as anyone.
//!
//! Nothing is skipped: if the binaries are missing or the server does not start, `start`
//! fails with the reason (and the server's log), and the test fails with it.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context as _};

/// The unprivileged account the server runs as when the test runs as root.
const SERVER_USER: &str = "nobody";

/// How long `pg_ctl` may wait for the server to accept connections, in seconds.
const START_TIMEOUT_S: &str = "30";

/// The database every server gets, which [`Postgres::url`] names.
const DATABASE: &str = "heatmap";

/// The tablespace [`Postgres::cramped_url`] puts its database in.
const CRAMPED_TABLESPACE: &str = "cramped";

/// How to start a test server.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresOptions {
    /// Keep `fsync` on. Off by default: the tests that only check answers need no
    /// durability against a power cut and start and ingest faster without it; a test of
    /// what survives a crash turns it on, so recovery is the real one.
    pub fsync: bool,
}

/// A running PostgreSQL server, stopped (`pg_ctl stop -m immediate`) and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    /// The temporary folder: `data/` (the cluster), the socket, `server.log`, and the
    /// cramped tablespace's mount point if one was made.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    options: PostgresOptions,
    /// Whether the server runs as [`SERVER_USER`] (the test runs as root).
    as_nobody: bool,
    running: bool,
    /// The size-limited tmpfs of [`Postgres::cramped_url`], unmounted on drop.
    cramped: Option<PathBuf>,
}

impl Postgres {
    /// Starts a server with the default options (no `fsync`) and one empty database.
    ///
    /// # Errors
    /// The binaries are missing, or the cluster cannot be created or started.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(PostgresOptions::default())
    }

    /// Starts a server with `options` and one empty database.
    ///
    /// # Errors
    /// The binaries are missing, or the cluster cannot be created or started.
    pub fn start_with(options: PostgresOptions) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let bin = find_binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "heatmap-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let as_nobody = running_as_root(&dir)?;
        let mut server = Postgres {
            dir,
            bin,
            port: 0,
            options,
            as_nobody,
            running: false,
            cramped: None,
        };
        if as_nobody {
            server.hand_to_nobody(&server.dir.clone())?;
        }
        server.run_as_server(
            "initdb",
            &[
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        // A port taken between choosing it and binding it makes the start fail: try another.
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.start_server() {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        if let Some(err) = last_error {
            return Err(err);
        }
        server.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        Ok(server)
    }

    /// The URL of the server's database.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// The URL of another database on the same server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty database and returns its URL, so each case of a test gets a fresh
    /// one on the same server.
    ///
    /// # Errors
    /// `psql` fails.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url_of(name))
    }

    /// Runs SQL on a database through `psql` and returns what it printed (unaligned, no
    /// headers), for tests that look behind the store.
    ///
    /// # Errors
    /// `psql` fails or the SQL does.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .current_dir(&self.dir)
            .output()
            .context("run psql")?;
        check(&output, &format!("psql {sql:?}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Kills the server the way a crash does (`pg_ctl stop -m immediate`: no checkpoint,
    /// the next start replays the write-ahead log).
    ///
    /// # Errors
    /// `pg_ctl` fails.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.running = false;
        self.run_as_server("pg_ctl", &["stop", "-D", "data", "-m", "immediate", "-w"])?;
        Ok(())
    }

    /// Starts the server again on the same port and data (after [`Postgres::crash`]).
    ///
    /// # Errors
    /// The server does not start (its log is in the error).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.start_server()
    }

    /// A new database whose tables and indexes live on a tmpfs of their own, which
    /// [`Postgres::limit_cramped`] sizes, so a write runs out of room part-way exactly as
    /// on a full disk (the kernel's `ENOSPC`, PostgreSQL's `53100 disk_full`). The
    /// write-ahead log stays on the real disk. Needs root, to mount the tmpfs.
    ///
    /// # Errors
    /// Not root, or the mount or the tablespace cannot be made.
    pub fn cramped_url(&mut self, name: &str) -> anyhow::Result<String> {
        if !self.as_nobody {
            bail!(
                "a size-limited tablespace needs a tmpfs mount, which needs root; run this test \
                 as root (CI does)"
            );
        }
        let mount = self.dir.join("cramped");
        if self.cramped.is_none() {
            std::fs::create_dir_all(&mount)?;
            let options = format!("size=64m,uid={NOBODY_ID},gid={NOBODY_ID},mode=0700");
            let output = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &options, "heatmap-cramped"])
                .arg(&mount)
                .output()
                .context("run mount")?;
            check(&output, "mount a tmpfs for the cramped tablespace")?;
            self.cramped = Some(mount.clone());
            self.psql(
                "postgres",
                &format!(
                    "CREATE TABLESPACE {CRAMPED_TABLESPACE} LOCATION '{}'",
                    mount.display()
                ),
            )?;
        }
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TABLESPACE {CRAMPED_TABLESPACE}"),
        )?;
        Ok(self.url_of(name))
    }

    /// Resizes the cramped tablespace so it can grow by only about `room` more bytes.
    ///
    /// # Errors
    /// No cramped tablespace, or the remount fails.
    pub fn limit_cramped(&self, room: u64) -> anyhow::Result<()> {
        let Some(mount) = &self.cramped else {
            bail!("no cramped tablespace: call cramped_url first");
        };
        let size = used_bytes(mount)? + room;
        // tmpfs counts whole pages.
        let size = size.div_ceil(4096).max(1) * 4096;
        let output = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(mount)
            .output()
            .context("run mount")?;
        check(&output, "resize the cramped tablespace")
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let mut settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        if self.options.fsync {
            // Crash recovery starts by syncing the data folder: one syncfs instead of an
            // fsync per file takes it from seconds to milliseconds here, as durable.
            settings.push_str(" -c recovery_init_sync_method=syncfs");
        } else {
            settings.push_str(" -c fsync=off");
        }
        let started = self.run_as_server(
            "pg_ctl",
            &[
                "start",
                "-D",
                "data",
                "-w",
                "-t",
                START_TIMEOUT_S,
                "-l",
                "server.log",
                "-o",
                &settings,
            ],
        );
        if let Err(err) = started {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "postgresql did not start on port {}: {err:#}\nserver.log:\n{}",
                self.port,
                tail.join("\n")
            );
        }
        self.running = true;
        Ok(())
    }

    /// Runs one of the server's programs in the folder, as `nobody` when we are root.
    fn run_as_server(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let path = self.bin.join(program);
        let mut command = if self.as_nobody {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("run {}", path.display()))?;
        check(&output, program)?;
        Ok(output)
    }

    fn hand_to_nobody(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(NOBODY_ID), Some(NOBODY_ID))
            .with_context(|| format!("give {} to {SERVER_USER}", path.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.crash();
        }
        if let Some(mount) = &self.cramped {
            let _ = Command::new("umount").arg("-l").arg(mount).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The uid and gid of `nobody` (and `nogroup`) on Debian.
const NOBODY_ID: u32 = 65534;

/// Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, the newest), or those in
/// `$PG_BIN`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        bail!("PG_BIN={} has no initdb", dir.display());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "postgresql server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no \
             PG_BIN): install Debian's postgresql package (scripts/test does)"
        ),
    }
}

/// Whether this process runs as root (the owner of a folder it just made is uid 0).
fn running_as_root(dir: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::metadata(dir)?.uid() == 0)
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Bytes the files under `dir` take on their file system.
fn used_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            }
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

fn check(output: &Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}
