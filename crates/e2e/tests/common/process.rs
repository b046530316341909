//! The renderer as a real process (`src/bin/renderer-process.rs`), for faults an
//! in-process server cannot suffer: SIGKILL (no shutdown path runs) and SIGTERM.

use std::path::PathBuf;
use std::process::Command;

use testkit::{ServerProcess, TempDir};

/// Starts the renderer on `listen` (`127.0.0.1:0`, or an address it had before to come
/// back where the relay looks for it) with the two folders and `extra_args` flags, and
/// waits for its address line: from then on it accepts connections. Killed on drop.
pub fn start_renderer_process(
    listen: &str,
    out_dir: &TempDir,
    data_dir: &TempDir,
    extra_args: &[&str],
) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_renderer-process"));
    command
        .arg("--listen")
        .arg(listen)
        .arg("--out-dir")
        .arg(out_dir.path())
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(extra_args);
    ServerProcess::start(command)
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
