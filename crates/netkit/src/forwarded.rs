//! The real client behind a reverse proxy.
//!
//! Behind a TLS-terminating proxy (Caddy, nginx) every visitor arrives from the proxy's
//! address, so per-address limits would apply to all visitors together. The proxy names the
//! visitor in `Forwarded` (RFC 7239) or `X-Forwarded-For`, and the scheme and host the
//! visitor used in `X-Forwarded-Proto` / `X-Forwarded-Host` (or `Forwarded`'s `proto=` and
//! `host=`). Anyone can send those headers, so they count only from a peer listed as a
//! trusted proxy (`--trusted-proxy`), and the client is the rightmost address of the chain
//! that is not itself a trusted proxy: every hop appends the address it saw, so entries to
//! the left of the first untrusted one were written by the client and prove nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName};

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// Parses `addr` or `addr/prefix`, so a flag can name one proxy or a whole network.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text} is not an address or CIDR block such as 10.0.0.0/8"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("prefix /{prefix} of {text} is not between 0 and {max}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The peers whose forwarding headers are believed; empty (the default) believes nobody.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts the peers in `nets`.
    pub fn new(nets: &[IpNet]) -> Self {
        TrustedProxies { nets: nets.into() }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// Whether no proxy is trusted, so every forwarding header is ignored.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Who sent a request, as far as the server can tell. The accept loop puts one in every
/// request's extensions, so routes that care about the scheme and host the visitor used
/// (the relay's own-origin check) need not parse the headers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The address every per-address limit, log line and metric uses: the visitor's behind a
    /// trusted proxy, else the peer's. A forwarded address without a port gets port 0.
    pub addr: SocketAddr,
    /// The TCP peer: the proxy when [`Client::forwarded`] is set.
    pub peer: SocketAddr,
    /// Whether `addr` came from a trusted proxy's headers.
    pub forwarded: bool,
    /// The scheme the visitor used (`http` or `https`), as a trusted proxy tells it.
    pub proto: Option<&'static str>,
    /// The host (and port) the visitor asked for, as a trusted proxy tells it.
    pub host: Option<String>,
}

impl Client {
    /// A client the server sees directly.
    pub fn direct(peer: SocketAddr) -> Self {
        Client {
            addr: peer,
            peer,
            forwarded: false,
            proto: None,
            host: None,
        }
    }
}

/// Most forwarded hops read from the right of a chain; a longer chain is cut at its left,
/// which only matters when that many trusted proxies follow one another.
const MAX_HOPS: usize = 32;

/// Who sent a request that `peer` delivered with `headers`.
///
/// From a peer outside `trusted` the headers are ignored. From a trusted one, `Forwarded`
/// is preferred to `X-Forwarded-For` when both are there; the chain is walked from the right,
/// past trusted proxies, to the first address that is not one. An entry that is not an
/// address (`unknown`, an obfuscated name, garbage) stops the walk at the hop that wrote it,
/// so a malformed header can never make up a client.
pub fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return Client::direct(peer);
    }
    let forwarded = forwarded_elements(headers);
    let (hops, proto, host) = if forwarded.is_empty() {
        let hops = header_values(headers, "x-forwarded-for")
            .map(|entry| parse_node(entry.trim()))
            .collect();
        let proto = last_value(headers, "x-forwarded-proto");
        let host = last_value(headers, "x-forwarded-host");
        (hops, proto, host)
    } else {
        let hops = forwarded
            .iter()
            .filter_map(|element| element.for_node.as_deref())
            .map(parse_node)
            .collect::<Vec<_>>();
        let last = forwarded.last();
        let proto = last.and_then(|element| element.proto.clone());
        let host = last.and_then(|element| element.host.clone());
        (hops, proto, host)
    };
    let mut addr = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(hop) = hop else { break };
        addr = *hop;
        if !trusted.contains(hop.ip()) {
            break;
        }
    }
    Client {
        addr,
        peer,
        forwarded: addr != peer,
        proto: proto.as_deref().and_then(parse_proto),
        host: host.filter(|host| is_host(host)),
    }
}

/// The comma-separated entries of every `name` header, in order.
fn header_values<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(HeaderName::from_static(name))
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("garbage").split(','))
}

/// The last entry of the `name` headers: the one the nearest (trusted) proxy wrote.
fn last_value(headers: &HeaderMap, name: &'static str) -> Option<String> {
    header_values(headers, name)
        .last()
        .map(|value| value.trim().to_owned())
}

/// One element of a `Forwarded` header: the parameters this server uses.
#[derive(Debug, Default)]
struct ForwardedElement {
    for_node: Option<String>,
    proto: Option<String>,
    host: Option<String>,
}

/// The elements of every `Forwarded` header, in order (RFC 7239 section 4), with quoted
/// values unquoted. A malformed element keeps its place with what could be read, so the
/// chain's order (and the walk's stop at garbage) is kept.
fn forwarded_elements(headers: &HeaderMap) -> Vec<ForwardedElement> {
    let mut elements = Vec::new();
    for value in headers.get_all(HeaderName::from_static("forwarded")) {
        let Ok(value) = value.to_str() else {
            elements.push(ForwardedElement {
                for_node: Some("garbage".into()),
                ..ForwardedElement::default()
            });
            continue;
        };
        for element in split_unquoted(value, ',') {
            let mut parsed = ForwardedElement::default();
            for pair in split_unquoted(element, ';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = unquote(value.trim());
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => parsed.for_node = Some(value),
                    "proto" => parsed.proto = Some(value),
                    "host" => parsed.host = Some(value),
                    _ => {}
                }
            }
            // An element without `for=` still says a hop happened; it is garbage to the walk.
            parsed.for_node.get_or_insert_with(|| "unknown".into());
            elements.push(parsed);
        }
    }
    elements
}

/// Splits `text` at `separator`s outside double quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (idx, ch) in text.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if ch == separator && !quoted => {
                parts.push(&text[start..idx]);
                start = idx + ch.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A quoted string's content (backslash escapes undone), or a token as it is.
fn unquote(value: &str) -> String {
    match value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(ch) = chars.next() {
                out.push(if ch == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    ch
                });
            }
            out
        }
        None => value.to_owned(),
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`. `None` for anything else (`unknown`, `_hidden`).
fn parse_node(node: &str) -> Option<SocketAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
    }
    let inner = node.strip_prefix('[')?.strip_suffix(']')?;
    let ip = inner.parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip.to_canonical(), 0))
}

fn parse_proto(proto: &str) -> Option<&'static str> {
    if proto.eq_ignore_ascii_case("https") {
        Some("https")
    } else if proto.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// Whether a forwarded host looks like `host[:port]` (no spaces, paths or user info).
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|byte| {
            byte.is_ascii_graphic() && !matches!(byte, b'/' | b'@' | b'?' | b'#' | b',')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|net| net.parse().unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn peer(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_contain() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.0.9")),
            "ipv4-mapped peers match"
        );
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(!one.contains(ip("127.0.0.2")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "proxy",
            "10.0.0/8",
            "10.0.0.0/x",
            "",
        ] {
            let err = bad.parse::<IpNet>().unwrap_err();
            assert!(err.contains(bad) || bad.is_empty(), "{bad}: {err}");
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_anything() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.8;proto=https;host=evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let client = client(peer("198.51.100.1:5000"), &spoofed, &proxies);
        assert_eq!(client, Client::direct(peer("198.51.100.1:5000")));
        // And with no proxies trusted at all, not even loopback is believed.
        let client = super::client(peer("127.0.0.1:5000"), &spoofed, &TrustedProxies::default());
        assert!(!client.forwarded);
    }

    #[test]
    fn the_rightmost_untrusted_address_of_x_forwarded_for_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // The visitor wrote 1.1.1.1 itself; the edge proxy 10.0.0.5 appended the visitor's
        // real address, and the inner proxy (the peer) appended the edge's.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9 ,10.0.0.5")]);
        let client = client(peer("127.0.0.1:4000"), &chain, &proxies);
        assert_eq!(client.addr, peer("203.0.113.9:0"));
        assert!(client.forwarded);
        assert_eq!(client.peer, peer("127.0.0.1:4000"));
        // Several header lines form one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.10, 10.0.0.5"),
        ]);
        assert_eq!(
            super::client(peer("127.0.0.1:4000"), &split, &proxies).addr,
            peer("203.0.113.10:0")
        );
        // Only trusted hops: the leftmost is the best there is.
        let internal = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
        assert_eq!(
            super::client(peer("127.0.0.1:4000"), &internal, &proxies).addr,
            peer("10.9.9.9:0")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_hop_that_wrote_it() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for value in [
            "not-an-ip",
            "",
            "unknown",
            "203.0.113.9, ",
            "999.1.1.1",
            "203.0.113.9, _hidden",
        ] {
            let client = client(
                peer("10.0.0.1:4000"),
                &headers(&[("x-forwarded-for", value)]),
                &proxies,
            );
            assert_eq!(client.addr, peer("10.0.0.1:4000"), "{value:?}");
            assert!(!client.forwarded, "{value:?}");
        }
        // Garbage behind a trusted hop: that hop is the client, not what the garbage hides.
        let client = client(
            peer("10.0.0.1:4000"),
            &headers(&[("x-forwarded-for", "203.0.113.9, garbage, 10.0.0.7")]),
            &proxies,
        );
        assert_eq!(client.addr, peer("10.0.0.7:0"));
        // Bytes that are not text are garbage too, never a panic.
        let mut binary = HeaderMap::new();
        binary.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            super::client(peer("10.0.0.1:1"), &binary, &proxies).addr,
            peer("10.0.0.1:1")
        );
    }

    #[test]
    fn ipv6_and_ports_in_either_header() {
        let proxies = trusted(&["::1", "127.0.0.1"]);
        let xff = headers(&[("x-forwarded-for", "2001:db8::7, [2001:db8::8]:4711")]);
        assert_eq!(
            client(peer("[::1]:9000"), &xff, &proxies).addr,
            peer("[2001:db8::8]:4711")
        );
        let xff = headers(&[("x-forwarded-for", "[2001:db8::9]")]);
        assert_eq!(
            client(peer("[::1]:9000"), &xff, &proxies).addr,
            peer("[2001:db8::9]:0")
        );
        // A proxy reached over IPv4-mapped IPv6 (a relay on [::]) is still trusted.
        let xff = headers(&[("x-forwarded-for", "192.0.2.60:51000")]);
        assert_eq!(
            client(peer("[::ffff:127.0.0.1]:9000"), &xff, &proxies).addr,
            peer("192.0.2.60:51000")
        );
    }

    #[test]
    fn forwarded_is_read_per_rfc_7239_and_preferred() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https;host="analytics.example", for=10.0.0.3"#,
            ),
            ("x-forwarded-for", "198.51.100.99"),
        ]);
        let client = client(peer("10.0.0.2:1"), &both, &proxies);
        assert_eq!(client.addr, peer("[2001:db8:cafe::17]:4711"));
        // Scheme and host come from the element the nearest proxy wrote.
        assert_eq!(client.proto, None);
        let nearest = headers(&[(
            "forwarded",
            "for=198.51.100.17;Proto=HTTPS;host=analytics.example:8443",
        )]);
        let client = super::client(peer("10.0.0.2:1"), &nearest, &proxies);
        assert_eq!(client.addr, peer("198.51.100.17:0"));
        assert_eq!(client.proto, Some("https"));
        assert_eq!(client.host.as_deref(), Some("analytics.example:8443"));
        // A comma inside quotes does not split elements; an obfuscated node is garbage.
        let quoted = headers(&[("forwarded", r#"for="_a,b", for=10.0.0.4"#)]);
        assert_eq!(
            super::client(peer("10.0.0.2:1"), &quoted, &proxies).addr,
            peer("10.0.0.4:0")
        );
        let hidden = headers(&[("forwarded", "for=_hidden;proto=https")]);
        let client = super::client(peer("10.0.0.2:1"), &hidden, &proxies);
        assert_eq!(client.addr, peer("10.0.0.2:1"));
        assert_eq!(client.proto, Some("https"));
    }

    #[test]
    fn scheme_and_host_come_only_from_the_nearest_proxy_and_must_be_sane() {
        let proxies = trusted(&["127.0.0.1"]);
        let sent = headers(&[
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "analytics.example"),
        ]);
        let client = client(peer("127.0.0.1:1"), &sent, &proxies);
        assert_eq!(client.proto, Some("https"));
        assert_eq!(client.host.as_deref(), Some("analytics.example"));
        assert!(!client.forwarded, "no address was forwarded");
        let odd = headers(&[
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "user@evil.example/path"),
        ]);
        let client = super::client(peer("127.0.0.1:1"), &odd, &proxies);
        assert_eq!((client.proto, client.host), (None, None));
    }
}
