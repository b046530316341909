//! A JetStream cluster of the test's own: several `nats-server`s on free loopback ports,
//! routed to each other, each with its store in a temporary folder; killed and removed
//! on drop.
//!
//! It is what `docs/scaling.md` tells operators to run (one server per machine, three of
//! them, streams with three replicas), on one machine, so a test can SIGKILL one server
//! and see that nothing acknowledged is lost and that clients find the others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::nats::{find_binary, free_port, server_info};

/// How long a server may take to accept a client.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait between two connection attempts while a server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One server of the cluster.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running JetStream cluster, every server SIGKILLed and the folder removed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    dir: PathBuf,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `size` servers (named `n0`, `n1`, …) that route to each other as one
    /// JetStream cluster, and waits until each accepts a client. The cluster elects its
    /// JetStream leader on its own shortly after; clients that declare a stream retry
    /// until it has.
    ///
    /// # Errors
    /// `nats-server` is missing, or a server does not start (its log is in the error).
    pub fn start(size: usize) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let binary = find_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "heatmap-nats-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (idx, &route_port) in route_ports.iter().enumerate() {
            let name = format!("n{idx}");
            let client_port = free_port()?;
            let monitor_port = free_port()?;
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)
                .with_context(|| format!("create {}", store.display()))?;
            let routes = route_ports
                .iter()
                .enumerate()
                .filter(|&(other, _)| other != idx)
                .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(", ");
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\n\
                     http: 127.0.0.1:{monitor_port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{\n  name: heatmap\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n",
                    store.display()
                ),
            )
            .with_context(|| format!("write {}", config.display()))?;
            nodes.push(Node {
                log: dir.join(format!("{name}.log")),
                name,
                client_port,
                monitor_port,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { dir, binary, nodes };
        for idx in 0..size {
            cluster.spawn(idx)?;
        }
        Ok(cluster)
    }

    /// The URL of server `idx` (`nats://127.0.0.1:PORT`); clients given one learn the
    /// others from it.
    pub fn url(&self, idx: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[idx].client_port)
    }

    /// The `host:port` of server `idx`'s monitoring endpoint (`/jsz`, `/healthz`), where
    /// a test reads what the cluster made of a stream (its replicas, its leader).
    pub fn monitor_addr(&self, idx: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[idx].monitor_port)
    }

    /// SIGKILLs server `idx`; its port and store stay for [`NatsCluster::restart`].
    ///
    /// # Errors
    /// The process cannot be killed or reaped.
    pub fn kill(&mut self, idx: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[idx].child.take() {
            child.kill().context("SIGKILL nats-server")?;
            child.wait().context("reap nats-server")?;
        }
        Ok(())
    }

    /// Starts server `idx` again with its port and store, and waits until it accepts a
    /// client.
    ///
    /// # Errors
    /// As [`NatsCluster::start`].
    pub fn restart(&mut self, idx: usize) -> anyhow::Result<()> {
        self.kill(idx)?;
        self.spawn(idx)
    }

    /// Every server's log so far, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- {} ---\n{}",
                    node.name,
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                )
            })
            .collect()
    }

    fn spawn(&mut self, idx: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[idx];
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .arg("-l")
            .arg(&node.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        node.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let node = &mut self.nodes[idx];
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait().context("poll nats-server")? {
                    node.child = None;
                    bail!(
                        "nats-server {} exited at start ({status}); its log:\n{}",
                        node.name,
                        std::fs::read_to_string(&node.log).unwrap_or_default()
                    );
                }
            }
            match server_info(node.client_port) {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                Err(err) => {
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    let name = node.name.clone();
                    self.kill(idx)?;
                    bail!(
                        "nats-server {name} did not accept a client within {START_TIMEOUT:?}: {err:#}; its log:\n{log}"
                    );
                }
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for idx in 0..self.nodes.len() {
            let _ = self.kill(idx);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_servers_form_one_cluster_and_one_comes_back_after_a_kill() {
        let mut cluster = NatsCluster::start(3).expect("start a cluster");
        // Each server announces the others' client addresses once the routes are up.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info = server_info(cluster.nodes[0].client_port).expect("info");
            let others_known = (1..3)
                .all(|idx| info.contains(&format!("127.0.0.1:{}", cluster.nodes[idx].client_port)));
            if others_known {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no routes: {info}\n{}",
                cluster.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        cluster.kill(1).expect("kill");
        assert!(server_info(cluster.nodes[1].client_port).is_err());
        cluster.restart(1).expect("restart");
        assert!(server_info(cluster.nodes[1].client_port).is_ok());
    }
}
