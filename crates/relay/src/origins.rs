//! The relay's own origins: the names under which browsers may reach it.
//!
//! A DNS-rebinding page (`evil.example`, resolving first to the attacker and then to
//! 127.0.0.1) reaches the relay with `Host: evil.example:3000` and an `Origin` to match,
//! so comparing `Origin` with `Host` proves nothing. The relay therefore knows its public
//! origins itself (`--public-url`, plus the loopback and listen-address forms of the bound
//! address) and refuses a `Host` or `Origin` outside them.
//!
//! Behind a trusted reverse proxy the relay may listen on `127.0.0.1:3000` while browsers use
//! `https://analytics.example`: that name goes in `--public-url`, and the Host check takes the
//! scheme and host the proxy forwarded ([`PublicOrigins::allows_host_over`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{anyhow, bail, Context as _};

/// The scheme, host and port browsers use to reach this relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicOrigins {
    origins: Vec<Origin>,
}

/// One `scheme://host:port`, normalised: lowercase host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// The scheme browsers use: `https` when the relay serves TLS itself, else `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl PublicOrigins {
    /// The origins of `--public-url` values, plus `scheme://` (`https` when the relay serves
    /// TLS itself) on the bound address `listen`
    /// under the names a local browser uses (`localhost`, `127.0.0.1`, `[::1]`, and the
    /// listen address itself). Loopback names are always included: a rebinding page
    /// cannot send them as its `Host`, because the browser names the attacker's domain.
    ///
    /// # Errors
    /// A `--public-url` that is not `http(s)://host[:port]` (a path of `/` is allowed).
    pub fn new(public_urls: &[String], listen: SocketAddr, scheme: Scheme) -> anyhow::Result<Self> {
        let mut origins = Vec::new();
        for url in public_urls {
            origins.push(parse_public_url(url).with_context(|| format!("--public-url {url}"))?);
        }
        let port = listen.port();
        let mut hosts = vec![
            "localhost".to_owned(),
            Ipv4Addr::LOCALHOST.to_string(),
            format!("[{}]", Ipv6Addr::LOCALHOST),
        ];
        hosts.push(match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
        for host in hosts {
            let origin = Origin { scheme, host, port };
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(PublicOrigins { origins })
    }

    /// Whether a `Host` header value (`host[:port]`) names this relay.
    pub fn allows_host(&self, host: &str) -> bool {
        let Some((name, port)) = split_authority(host) else {
            return false;
        };
        self.origins.iter().any(|origin| {
            origin.host == name && port.unwrap_or(origin.scheme.default_port()) == origin.port
        })
    }

    /// Whether a host (`host[:port]`) reached over `scheme` names this relay: the check for a
    /// request a trusted proxy passed on, which says the scheme the visitor used
    /// (`X-Forwarded-Proto`), so `analytics.example` means port 443 when it was `https`.
    /// Without a scheme this is [`PublicOrigins::allows_host`].
    pub fn allows_host_over(&self, host: &str, scheme: Option<&str>) -> bool {
        let Some(scheme) = scheme.and_then(Scheme::parse) else {
            return self.allows_host(host);
        };
        let Some((name, port)) = split_authority(host) else {
            return false;
        };
        let port = port.unwrap_or(scheme.default_port());
        self.origins
            .iter()
            .any(|own| own.scheme == scheme && own.host == name && own.port == port)
    }

    /// Whether an `Origin` header value (`scheme://host[:port]`) is one of ours.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let Some(scheme) = Scheme::parse(scheme) else {
            return false;
        };
        let Some((name, port)) = split_authority(authority) else {
            return false;
        };
        let port = port.unwrap_or(scheme.default_port());
        self.origins
            .iter()
            .any(|own| own.scheme == scheme && own.host == name && own.port == port)
    }
}

impl fmt::Display for PublicOrigins {
    /// The origins as a comma-separated list, for error messages and the start-up log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, origin) in self.origins.iter().enumerate() {
            if idx > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{}://{}:{}",
                origin.scheme.as_str(),
                origin.host,
                origin.port
            )?;
        }
        Ok(())
    }
}

/// Parses `http(s)://host[:port][/]` into an origin.
fn parse_public_url(url: &str) -> anyhow::Result<Origin> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("needs a scheme, e.g. https://heatmaps.example"))?;
    let scheme =
        Scheme::parse(scheme).ok_or_else(|| anyhow!("scheme {scheme} is not http or https"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        bail!("only scheme, host and port are allowed, without a path");
    }
    let (host, port) =
        split_authority(authority).ok_or_else(|| anyhow!("host {authority} is not valid"))?;
    Ok(Origin {
        scheme,
        host,
        port: port.unwrap_or(scheme.default_port()),
    })
}

/// Splits `host[:port]` (IPv6 in brackets) into a lowercase host without a trailing dot
/// and the port, if one is given. `None` for an empty host or a bad port.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bracketed = host.starts_with('[');
    if host.is_empty() || host.contains(char::is_whitespace) || (!bracketed && host.contains(':')) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> PublicOrigins {
        PublicOrigins::new(&[], SocketAddr::from(([127, 0, 0, 1], port)), Scheme::Http).unwrap()
    }

    #[test]
    fn the_loopback_names_of_the_bound_port_are_ours() {
        let origins = local(3000);
        for host in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST:3000",
            "[::1]:3000",
        ] {
            assert!(origins.allows_host(host), "{host}");
        }
        for host in [
            "evil.example:3000",
            "127.0.0.1:3001",
            "localhost",
            "",
            "127.0.0.1:x",
        ] {
            assert!(!origins.allows_host(host), "{host}");
        }
        assert!(origins.allows_origin("http://localhost:3000"));
        assert!(origins.allows_origin("http://127.0.0.1:3000"));
        assert!(!origins.allows_origin("https://127.0.0.1:3000"));
        assert!(!origins.allows_origin("http://evil.example:3000"));
        assert!(!origins.allows_origin("null"));
    }

    #[test]
    fn a_public_url_adds_its_origin_with_the_default_port() {
        let urls = vec!["https://Heatmaps.example/".to_owned()];
        let origins =
            PublicOrigins::new(&urls, SocketAddr::from(([0, 0, 0, 0], 3000)), Scheme::Http)
                .unwrap();
        assert!(origins.allows_host("heatmaps.example"));
        assert!(origins.allows_host("heatmaps.example:443"));
        assert!(origins.allows_host("heatmaps.example."));
        assert!(!origins.allows_host("heatmaps.example:80"));
        assert!(origins.allows_origin("https://heatmaps.example"));
        assert!(!origins.allows_origin("http://heatmaps.example"));
        assert!(origins.allows_host("0.0.0.0:3000"));
        assert!(origins.allows_host("localhost:3000"));
    }

    #[test]
    fn a_forwarded_scheme_picks_the_default_port_and_must_match() {
        let urls = vec!["https://analytics.example".to_owned()];
        let origins = PublicOrigins::new(
            &urls,
            SocketAddr::from(([127, 0, 0, 1], 3000)),
            Scheme::Http,
        )
        .unwrap();
        assert!(origins.allows_host_over("analytics.example", Some("https")));
        assert!(origins.allows_host_over("analytics.example:443", Some("https")));
        assert!(!origins.allows_host_over("analytics.example", Some("http")));
        assert!(!origins.allows_host_over("evil.example", Some("https")));
        assert!(origins.allows_host_over("127.0.0.1:3000", None));
        assert!(!origins.allows_host_over("127.0.0.1:3000", Some("https")));
    }

    #[test]
    fn a_bad_public_url_is_a_clear_error() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 3000));
        for url in [
            "heatmaps.example",
            "ftp://x",
            "https://x/path",
            "https://x:99999",
            "https://",
        ] {
            let err = PublicOrigins::new(&[url.to_owned()], listen, Scheme::Http).unwrap_err();
            assert!(
                format!("{err:#}").starts_with("--public-url"),
                "{url}: {err:#}"
            );
        }
    }
}
