//! Debian's nginx in front of a relay, configured from `deploy/nginx/heatmaps.conf`.
//!
//! The test starts its own nginx as the current user, in the foreground and as a single
//! process (so killing it leaves no worker behind), on free loopback ports, with every path
//! (pid, logs, temporary files) in a temporary folder. The configuration is the deployment's
//! file with only its ports, upstream address and certificate paths swapped in.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use testkit::tls::TestPki;
use testkit::TempDir;

/// Where Debian installs nginx.
const NGINX: &str = "/usr/sbin/nginx";

/// The deployment's nginx configuration, as shipped.
const TEMPLATE: &str = include_str!("../../../../deploy/nginx/heatmaps.conf");

/// A running nginx, killed on drop.
pub struct Nginx {
    child: Child,
    /// The `https://` port (the template's 443).
    pub port: u16,
    dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port, for a program that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

impl Nginx {
    /// Starts nginx on `port` (https, with `pki`'s certificate) in front of the relay at
    /// `relay`.
    ///
    /// # Panics
    /// If nginx is missing or does not start: the message says why (its error log).
    pub async fn start(port: u16, relay: SocketAddr, pki: &TestPki) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is needed: run scripts/test (it installs Debian's nginx) or apt-get install nginx"
        );
        let dir = TempDir::new("nginx");
        let site = site_config(port, free_port(), relay, &pki.cert, &pki.key);
        std::fs::write(dir.path().join("heatmaps.conf"), site).unwrap();
        let main = main_config(dir.path());
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).unwrap();
        let error_log = dir.path().join("error.log");
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {NGINX}: {err}"));
        let addr = format!("127.0.0.1:{port}");
        testkit::eventually("nginx to listen", || {
            let exited = child.try_wait().expect("poll nginx");
            let addr = addr.clone();
            let error_log = error_log.clone();
            async move {
                if let Some(status) = exited {
                    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                    panic!("nginx exited with {status}:\n{log}");
                }
                tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
            }
        })
        .await;
        Nginx { child, port, dir }
    }

    /// nginx's error log so far, for a failing test's message.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The deployment's file with the test's addresses: each replaced line must be there as
/// shipped, so a change to the file that the test no longer matches fails loudly here.
fn site_config(port: u16, http_port: u16, relay: SocketAddr, cert: &Path, key: &Path) -> String {
    let replacements: [(&str, String); 7] = [
        ("server 127.0.0.1:3000;", format!("server {relay};")),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        ("listen [::]:443 ssl;", String::new()),
        ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
        ("listen [::]:80;", String::new()),
        (
            "/etc/letsencrypt/live/analytics.example/fullchain.pem",
            cert.display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/analytics.example/privkey.pem",
            key.display().to_string(),
        ),
    ];
    let mut config = TEMPLATE.to_owned();
    for (shipped, test) in replacements {
        assert!(
            config.contains(shipped),
            "deploy/nginx/heatmaps.conf no longer has {shipped:?}"
        );
        config = config.replace(shipped, &test);
    }
    config
}

/// nginx's main file: everything it writes stays in `dir`.
fn main_config(dir: &Path) -> String {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    format!(
        "worker_processes 1;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    include {site};
}}
",
        pid = path("nginx.pid").display(),
        error_log = path("error.log").display(),
        body = path("body").display(),
        proxy = path("proxy").display(),
        fastcgi = path("fastcgi").display(),
        uwsgi = path("uwsgi").display(),
        scgi = path("scgi").display(),
        site = path("heatmaps.conf").display(),
    )
}
