//! Where an endpoint may point: the SSRF boundary.
//!
//! An endpoint is `https://`; plain `http://` only to a loopback host, for
//! tests and a carrier's local receiver. No request reaches a private,
//! loopback, link-local, shared (CGNAT), multicast or unspecified address
//! unless the carrier allows it explicitly ([`Policy::allow_private`]).
//! The check runs on the addresses a connection is actually made to (the
//! HTTP client resolves names through [`Policy::admit`]), so a name that
//! resolves to a public address when registered and to a private one when
//! delivered (DNS rebinding) is refused at delivery. Redirects are never
//! followed.

use std::net::{IpAddr, Ipv4Addr};

use crate::{Error, Result};

/// Longest endpoint URL accepted.
pub const MAX_URL: usize = 2048;

/// What the carrier allows endpoints to reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Lets endpoints reach private, loopback and link-local addresses:
    /// for tests and a carrier whose receivers are on its own network.
    pub allow_private: bool,
}

/// Whether `ip` is on the public internet (not private, loopback,
/// link-local, shared, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address carried in IPv6 (mapped, or NAT64) is judged
            // as the IPv4 address it reaches.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            // NAT64 for local use (64:ff9b:1::/48, RFC 8215) translates to
            // whatever the operator's network routes; 6to4 (2002::/16)
            // carries an IPv4 address of its own: neither is trusted.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) || s[0] == 0x2002 {
                return false;
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0..6] == [0, 0, 0, 0, 0, 0])) // IPv4-compatible, ::/96
        }
    }
}

/// What a partner is told of a name no connection may be made to, the
/// same whether it does not resolve or resolves only to addresses an
/// endpoint may not reach: which internal names the carrier's resolver
/// knows is not the partner's to learn.
pub fn unreachable(host: &str) -> Error {
    Error::Refused(format!(
        "{host} has no address endpoints may reach (it does not resolve, or only to \
         private, loopback or link-local addresses)"
    ))
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared, 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Policy {
    /// Whether a connection may be made to `ip`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// The addresses of `addrs` a connection may be made to; an error
    /// naming `host` when none is.
    pub fn admit(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Result<Vec<std::net::SocketAddr>> {
        let (ok, refused): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| self.admits(a.ip()));
        if ok.is_empty() {
            // The addresses go to the carrier's log, not to the partner,
            // who reads this error in its attempts: they would map the
            // carrier's own network and names.
            tracing::warn!(
                host,
                refused = ?refused.iter().map(|a| a.ip()).collect::<Vec<_>>(),
                "webhooks: an endpoint's name resolves only to addresses endpoints may not reach"
            );
            return Err(unreachable(host));
        }
        Ok(ok)
    }

    /// Checks an endpoint URL as registered: scheme, host, no credentials,
    /// and an IP literal host against the policy. Names are checked again
    /// at every connection.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url> {
        if url.len() > MAX_URL {
            return Err(Error::Invalid(format!("url: longer than {MAX_URL} bytes")));
        }
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Error::Invalid(format!("url {url:?}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::Invalid(format!("url {url:?}: no host")))?
            .to_owned();
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            "http" => {
                return Err(Error::Invalid(format!(
                    "url {url:?}: must be https:// (http:// only to a loopback host)"
                )));
            }
            other => {
                return Err(Error::Invalid(format!(
                    "url {url:?}: scheme {other:?}, https expected"
                )));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::Invalid(format!(
                "url {url:?}: credentials in the URL are not accepted"
            )));
        }
        if parsed.fragment().is_some() {
            return Err(Error::Invalid(format!(
                "url {url:?}: a fragment is not sent"
            )));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>()
            && !self.admits(ip)
        {
            return Err(Error::Refused(format!(
                "url {url:?}: {ip} is a private, loopback or link-local address"
            )));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<std::net::Ipv6Addr>().expect("v6"))
    }

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!is_public(v6(ip)), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "8.8.8.8"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
        assert!(is_public(v6("2a00:1450:4001::1")));
    }

    #[test]
    fn urls_are_https_and_public_unless_allowed() {
        let strict = Policy::default();
        let lax = Policy {
            allow_private: true,
        };
        assert!(strict.check_url("https://shop.example/hooks").is_ok());
        assert!(strict.check_url("http://shop.example/hooks").is_err());
        assert!(strict.check_url("ftp://shop.example/").is_err());
        assert!(strict.check_url("https://user:pw@shop.example/").is_err());
        assert!(strict.check_url("https://169.254.169.254/latest").is_err());
        assert!(strict.check_url("https://[::1]:8443/").is_err());
        assert!(strict.check_url("http://127.0.0.1:8080/").is_err());
        // A name passes here; where it resolves is checked at each connection.
        assert!(strict.check_url("http://localhost:8080/").is_ok());
        assert!(lax.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(
            lax.check_url("http://10.0.0.1/").is_err(),
            "http only to loopback"
        );
        assert!(lax.check_url("https://10.0.0.1/").is_ok());
        assert!(
            strict
                .check_url(&format!("https://a.example/{}", "x".repeat(MAX_URL)))
                .is_err()
        );
    }

    #[test]
    fn admit_keeps_only_reachable_addresses() {
        let strict = Policy::default();
        let addrs: Vec<std::net::SocketAddr> = vec![
            "10.0.0.1:443".parse().expect("a"),
            "93.184.216.34:443".parse().expect("a"),
        ];
        assert_eq!(strict.admit("h", addrs.clone()).expect("one").len(), 1);
        // Refused without naming the addresses (the partner reads it), and
        // as a name that does not resolve is.
        let refused = strict.admit("h", vec![addrs[0]]).expect_err("private");
        assert!(!refused.to_string().contains("10.0.0.1"), "{refused}");
        assert_eq!(
            refused.to_string(),
            strict.admit("h", Vec::new()).expect_err("none").to_string()
        );
    }

    #[test]
    fn nat64_for_local_use_and_6to4_are_not_public() {
        let v6 = |s: &str| IpAddr::V6(s.parse().expect("v6"));
        // The cloud's metadata address behind each.
        assert!(!is_public(v6("64:ff9b:1::a9fe:a9fe")));
        assert!(!is_public(v6("2002:a9fe:a9fe::1")));
        assert!(!is_public(v6("2002:5db8:d822::1")));
        // The well-known NAT64 prefix still carries a public address.
        assert!(is_public(v6("64:ff9b::5db8:d822")));
        assert!(is_public(v6("2606:4700::1111")));
    }
}
