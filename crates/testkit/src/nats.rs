//! A NATS server with JetStream of the test's own: Debian's `nats-server`, a free
//! loopback port, its store in a temporary folder, killed and removed on drop.
//!
//! Nothing is skipped: if the binary is missing or the server does not come up, `start`
//! fails with the reason (and the server's log), and the test fails with it.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Where Debian installs the server.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// How long the server may take to accept a client with JetStream on.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait between two connection attempts while the server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running `nats-server -js`, SIGKILLed and its folder removed on drop.
#[derive(Debug)]
pub struct NatsServer {
    /// The temporary folder: `store/` (JetStream's) and `server.log`.
    dir: PathBuf,
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port and an empty store.
    ///
    /// # Errors
    /// `nats-server` is missing, or the server does not accept a client in time.
    pub fn start() -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let binary = find_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "heatmap-nats-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("store"))
            .with_context(|| format!("create {}", dir.display()))?;
        let mut server = NatsServer {
            dir,
            binary,
            port: 0,
            child: None,
        };
        // A port taken between choosing it and binding it makes the start fail: try another.
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// The URL clients connect to (`nats://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the server: nothing of its shutdown runs. Its port and store stay for
    /// [`NatsServer::restart`].
    ///
    /// # Errors
    /// The process cannot be killed or reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL nats-server")?;
            child.wait().context("reap nats-server")?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store (killing it first if
    /// it runs), and waits until it accepts a client.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Starts the process and waits until a client gets its `INFO` line, which it sends
    /// once it is ready; JetStream must be on in it.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("server.log");
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("poll nats-server")? {
                    self.child = None;
                    bail!(
                        "nats-server on port {} exited at start ({status}); its log:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
            match server_info(self.port) {
                Ok(info) if info.contains("\"jetstream\":true") => return Ok(()),
                Ok(info) => {
                    self.kill()?;
                    bail!("nats-server answered without JetStream: {info}");
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Err(err) => {
                    self.kill()?;
                    bail!(
                        "nats-server on port {} did not accept a client within {START_TIMEOUT:?}: {err:#}; its log:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server's `INFO` line, which it sends first to every client.
pub(crate) fn server_info(port: u16) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .context("set a read timeout")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("read INFO")?;
    if !line.starts_with("INFO ") {
        bail!("not a NATS greeting: {line:?}");
    }
    Ok(line)
}

/// Debian's binary, else one on `PATH`.
pub(crate) fn find_binary() -> anyhow::Result<PathBuf> {
    if Path::new(DEBIAN_BINARY).is_file() {
        return Ok(PathBuf::from(DEBIAN_BINARY));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "nats-server not found at {DEBIAN_BINARY} or on PATH; install Debian's \
                 nats-server (scripts/test does) to run the cluster bus tests"
            )
        })
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr().context("read the port")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_with_jetstream_and_comes_back_on_its_port() {
        let mut server = NatsServer::start().expect("start nats-server");
        let info = server_info(server.port()).expect("info");
        assert!(info.contains("\"jetstream\":true"), "{info}");
        server.kill().expect("kill");
        assert!(server_info(server.port()).is_err(), "killed means gone");
        server.restart().expect("restart");
        assert!(server_info(server.port()).is_ok());
    }
}
