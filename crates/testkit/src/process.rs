//! A server binary as a process of its own, for the tests that kill it or stop it with a
//! signal: started with its flags, known by the address line it prints first, and killed
//! when the test lets go of it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running server process, SIGKILLed on drop so no test leaves one behind.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Starts `command` (stdout piped, stderr dropped) and reads its first line, which our
    /// binaries print as their address (`ws://…`, `http://…`, or with TLS `wss://…`, `https://…`) once they are listening.
    ///
    /// # Panics
    /// If the process cannot start or its first line is not an address: the test fails.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address line");
        assert!(
            ["ws://", "wss://", "http://", "https://"]
                .iter()
                .any(|scheme| line.starts_with(scheme)),
            "the first line is the address: {line:?}"
        );
        ServerProcess {
            child,
            url: line.trim().to_owned(),
        }
    }

    /// The address line as printed (`ws://127.0.0.1:40123`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, for HTTP requests.
    pub fn addr(&self) -> String {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, addr)| addr)
            .to_owned()
    }

    /// The operating system's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: no shutdown path of the server runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Sends SIGTERM, the graceful stop.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits (with the test deadline) until the process has exited, and returns how.
    pub async fn exited(&mut self) -> ExitStatus {
        let child = &mut self.child;
        crate::eventually("the server process to exit", || {
            let exited = child.try_wait().expect("poll the child");
            async move { exited }
        })
        .await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
