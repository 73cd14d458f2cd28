//! Which peers may say who the client is: the trusted proxies of [`KeyBy::ClientIp`], and the
//! forwarded header they set.
//!
//! [`KeyBy::ClientIp`]: super::KeyBy::ClientIp

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::{HeaderMap, HeaderName, FORWARDED};

use crate::error::{Error, Result};

/// The `X-Forwarded-For` header (not among `http`'s constants).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header in which trusted proxies name the address they received a request from.
///
/// Only the one header the proxies set is read: a proxy that appends to `X-Forwarded-For`
/// passes a client's own `Forwarded` header through untouched, so reading both would let any
/// client choose its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: <client>, <proxy 1>, <proxy 2>` (nginx, HAProxy, most cloud load
    /// balancers); entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=<client>, for=<proxy 1>`, the `for` parameter of each element
    /// (`for=192.0.2.60`, `for="[2001:db8::1]:4711"`).
    Forwarded,
}

/// Proxies whose forwarded header is believed: IP addresses and CIDR ranges.
///
/// For a request whose connecting peer is trusted, the forwarded header is read from its last
/// (nearest) entry backwards, past every entry that is itself a trusted proxy; the first
/// address that is not is the client. An entry that is not an address (`unknown`, an
/// obfuscated `_name`, garbage) ends the walk at the last trusted hop before it, since nothing
/// to its left can be verified. When every entry is trusted, the first one is the client. A
/// request whose peer is not trusted is the peer, whatever headers it carries.
///
/// The default trusts nobody: forwarded headers are ignored.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use queue_core::rate_limit::TrustedProxies;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let proxies = TrustedProxies::new(["10.0.0.0/8", "192.0.2.7", "fd00::/8"])?;
/// assert!(proxies.contains("10.1.2.3".parse()?));
/// assert!(!proxies.contains("11.0.0.1".parse()?));
///
/// // A request relayed by two of the proxies: the client is the first untrusted hop.
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse()?);
/// let peer: IpAddr = "10.0.0.1".parse()?;
/// assert_eq!(proxies.client_ip(peer, &headers), "203.0.113.9".parse::<IpAddr>()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trusts nobody: every request is keyed by its peer address.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// Trusts the proxies in `list`: addresses (`10.0.0.1`, `2001:db8::1`) and ranges in CIDR
    /// notation (`10.0.0.0/8`, `fd00::/8`), reading `X-Forwarded-For`
    /// ([`TrustedProxies::header`] to read `Forwarded` instead). IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`) match their IPv4 form, both in the list and in requests.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first entry that is neither an address nor a range.
    pub fn new(list: impl IntoIterator<Item = impl AsRef<str>>) -> Result<TrustedProxies> {
        let nets = list
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                IpNet::parse(entry).ok_or_else(|| {
                    Error::Config(format!(
                        "invalid trusted proxy {entry:?}: expected an IP address or a CIDR \
                         range such as \"10.0.0.0/8\" or \"fd00::/8\""
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(TrustedProxies {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads `header` instead of `X-Forwarded-For`: the one the proxies set.
    pub fn header(mut self, header: ForwardedHeader) -> TrustedProxies {
        self.header = header;
        self
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers` (see the type's docs
    /// for the rule).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        };
        // Several header lines are one list, in order; the nearest hop is the last entry of
        // the last line. A line that is not text cannot be read past.
        let hops = headers.get_all(name).iter().rev().flat_map(|line| {
            let entries: Box<dyn Iterator<Item = Option<IpAddr>>> = match line.to_str() {
                Ok(text) => Box::new(text.rsplit(',').map(|e| self.parse_hop(e))),
                Err(_) => Box::new(std::iter::once(None)),
            };
            entries
        });
        for hop in hops {
            let Some(ip) = hop else { break };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }

    /// The address of one entry of the forwarded header, if it names one.
    fn parse_hop(&self, entry: &str) -> Option<IpAddr> {
        match self.header {
            ForwardedHeader::XForwardedFor => parse_addr(entry),
            ForwardedHeader::Forwarded => entry
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_addr(v)),
        }
    }
}

/// An address with an optional port, as proxies write them: `1.2.3.4`, `1.2.3.4:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, possibly in double quotes.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s);
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        sa.ip()
    } else {
        IpAddr::V6(
            s.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()?,
        )
    };
    Some(ip.to_canonical())
}

/// An address range: the addresses whose first `prefix` bits are `addr`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `a.b.c.d`, `a.b.c.d/n` (n ≤ 32), an IPv6 address, or one with `/n` (n ≤ 128).
    fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8`'s parser would take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&n| n <= max)?
            }
            Some(_) => return None,
        };
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps: requests'
        // addresses are compared in their canonical form.
        if let (IpAddr::V6(v6), true) = (addr, prefix >= 96) {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Some(IpNet {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                l.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn parses_addresses_and_ranges() {
        for (entry, inside, outside) in [
            ("10.0.0.0/8", "10.255.1.2", "11.0.0.0"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.8"),
            ("192.0.2.7/32", "192.0.2.7", "192.0.2.6"),
            ("172.16.0.0/12", "172.31.255.255", "172.32.0.0"),
            ("0.0.0.0/0", "203.0.113.1", "::1"),
            ("10.1.2.3/8", "10.9.9.9", "9.255.255.255"),
            ("fd00::/8", "fdab::1", "fe80::1"),
            ("2001:db8::1", "2001:db8::1", "2001:db8::2"),
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::"),
            ("::/0", "2001:db8::1", "10.0.0.1"),
            ("::ffff:10.0.0.0/104", "10.2.3.4", "11.0.0.1"),
            // An IPv4-mapped request address matches the IPv4 range.
            ("10.0.0.0/8", "::ffff:10.0.0.9", "::ffff:11.0.0.9"),
        ] {
            let p = TrustedProxies::new([entry]).expect(entry);
            assert!(p.contains(ip(inside)), "{entry} contains {inside}");
            assert!(
                !p.contains(ip(outside)),
                "{entry} does not contain {outside}"
            );
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "localhost",
            "10.0.0.0/-1",
            "10.0.0.0/0008",
        ] {
            let e = TrustedProxies::new([bad]).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn headers_are_ignored_unless_the_peer_is_trusted() {
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            TrustedProxies::none().client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        let p = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        assert_eq!(p.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // A trusted peer that forwarded nothing is the client.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn walks_back_past_trusted_hops_only() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        let peer = ip("10.0.0.1");
        for (lines, client) in [
            // A client's forged entries are left of the one the proxy appended.
            (&["1.1.1.1, 203.0.113.9"][..], "203.0.113.9"),
            (&["1.1.1.1, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),
            (&["1.1.1.1", "203.0.113.9, 10.0.0.2"], "203.0.113.9"),
            (&["203.0.113.9:5678, 10.0.0.2"], "203.0.113.9"),
            (&["[2001:db8::9]:443"], "2001:db8::9"),
            (&["2001:db8::9"], "2001:db8::9"),
            // Every hop trusted: the first is the client.
            (&["10.0.0.7, 10.0.0.2"], "10.0.0.7"),
            // An entry that is no address stops the walk at the hop before it.
            (&["203.0.113.9, unknown, 10.0.0.2"], "10.0.0.2"),
            (&["203.0.113.9, garbage"], "10.0.0.1"),
            (&[""], "10.0.0.1"),
        ] {
            let h = headers("x-forwarded-for", lines);
            assert_eq!(p.client_ip(peer, &h), ip(client), "{lines:?}");
        }
        // `Forwarded` is not read unless asked for.
        let h = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(p.client_ip(peer, &h), peer);
    }

    #[test]
    fn reads_rfc_7239_forwarded_when_asked() {
        let p = TrustedProxies::new(["10.0.0.0/8", "2001:db8:cafe::/48"])
            .expect("valid")
            .header(ForwardedHeader::Forwarded);
        let peer = ip("10.0.0.1");
        for (lines, client) in [
            (&["for=203.0.113.9"][..], "203.0.113.9"),
            (&["for=1.1.1.1, for=203.0.113.9;proto=https"], "203.0.113.9"),
            (
                &["For=\"[2001:db8::17]:4711\", for=\"[2001:db8:cafe::1]\""],
                "2001:db8::17",
            ),
            (
                &["for=203.0.113.9", "by=10.0.0.1;for=10.0.0.5"],
                "203.0.113.9",
            ),
            (&["for=_hidden, for=10.0.0.5"], "10.0.0.5"),
            (&["proto=https"], "10.0.0.1"),
        ] {
            let h = headers("forwarded", lines);
            assert_eq!(p.client_ip(peer, &h), ip(client), "{lines:?}");
        }
        // `X-Forwarded-For` is not read when `Forwarded` is the header.
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(p.client_ip(peer, &h), peer);
    }

    #[test]
    fn non_text_header_lines_are_a_wall() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR.clone(),
            http::HeaderValue::from_bytes(b"203.0.113.9\xff").expect("opaque"),
        );
        h.append(
            X_FORWARDED_FOR.clone(),
            http::HeaderValue::from_static("10.0.0.3"),
        );
        assert_eq!(p.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.3"));
    }
}
