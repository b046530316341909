//! The renderer as a real process (`src/bin/renderer-process.rs`), for faults an
//! in-process server cannot suffer: SIGKILL (no shutdown path runs) and SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use testkit::TempDir;

/// A renderer process, killed on drop so a failing test leaves nothing running.
pub struct RendererProcess {
    child: Child,
    /// The WebSocket URL it printed on its first line (`ws://addr`).
    pub url: String,
}

impl RendererProcess {
    /// Starts the renderer on `listen` (`127.0.0.1:0`, or an address it had before to come
    /// back where the relay looks for it) with the two folders and `extra_args` flags, and
    /// waits for its address line: from then on it accepts connections.
    pub fn start(listen: &str, out_dir: &TempDir, data_dir: &TempDir, extra_args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_renderer-process"))
            .arg("--listen")
            .arg(listen)
            .arg("--out-dir")
            .arg(out_dir.path())
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the renderer process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address line");
        assert!(
            line.starts_with("ws://"),
            "first line is the address: {line:?}"
        );
        RendererProcess {
            child,
            url: line.trim().to_owned(),
        }
    }

    /// `host:port`, for HTTP requests and for starting again on the same port.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("ws://").to_owned()
    }

    /// Sends the signal `name` (`-TERM`, `-KILL`) and returns at once.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGKILL (std's kill): no shutdown path runs, nothing is flushed or answered.
    /// Returns once the process is reaped, so its port is free again.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the renderer");
        self.child.wait().expect("reap the renderer");
    }

    /// Waits (boundedly) until the process has exited, and returns how.
    pub async fn exited(&mut self) -> ExitStatus {
        testkit::eventually("the renderer to exit", || {
            let exited = self.child.try_wait().expect("poll the child");
            async move { exited }
        })
        .await
    }
}

impl Drop for RendererProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PNG files in `out_dir`, sorted.
pub fn images(out_dir: &TempDir) -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "png"))
        .collect();
    images.sort();
    images
}
