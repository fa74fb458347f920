//! Where webhooks may go: `http`/`https` URLs whose host resolves only to public addresses.
//! Checked when a subscription is made and again at every delivery, where the request is then
//! sent to the very address that was checked (so DNS rebinding cannot swap it in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use url::Host;

/// Why a URL is refused; the message is meant for the `url` field of a problem response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Syntax: an absolute `http`/`https` URL with a host and without credentials.
pub fn validate_url(raw: &str) -> Result<Url, UrlError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(UrlError("must not be empty".into()));
    }
    if raw.len() > 2000 {
        return Err(UrlError("must be at most 2000 characters".into()));
    }
    let url = Url::parse(raw).map_err(|e| UrlError(format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError(format!(
            "scheme `{}` is not allowed: use http or https",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(UrlError("must name a host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError("must not contain credentials".into()));
    }
    Ok(url)
}

/// Loopback, private, link-local, CGNAT, unspecified, multicast, broadcast, documentation and
/// cloud metadata addresses: nothing a webhook may reach.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254)
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) carry an IPv4 address.
                || (s[..6] == [0, 0, 0, 0, 0, 0] && forbidden_v4(embedded_v4(v6)))
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && forbidden_v4(embedded_v4(v6)))
        }
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, incl. 169.254.169.254
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved
}

/// Resolve the URL's host and check every address. Returns the host name and the addresses to
/// connect to. With `allow_private` (tests, local setups) nothing is refused.
pub async fn resolve_checked(
    url: &Url,
    allow_private: bool,
) -> Result<(String, Vec<SocketAddr>), UrlError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| UrlError("has no port".into()))?;
    let (name, addrs): (String, Vec<SocketAddr>) = match url.host() {
        Some(Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(Host::Domain(d)) => {
            let found = tokio::net::lookup_host((d, port))
                .await
                .map_err(|e| UrlError(format!("host `{d}` does not resolve: {e}")))?
                .collect::<Vec<_>>();
            (d.to_string(), found)
        }
        None => return Err(UrlError("must name a host".into())),
    };
    if addrs.is_empty() {
        return Err(UrlError(format!("host `{name}` does not resolve")));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_forbidden_ip(a.ip())) {
        return Err(UrlError(format!(
            "host `{name}` resolves to {}, a loopback, private, link-local or otherwise non-public address",
            bad.ip()
        )));
    }
    Ok((name, addrs))
}

/// Syntax and addresses together: what a subscription is checked with.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<Url, UrlError> {
    let url = validate_url(raw)?;
    resolve_checked(&url, allow_private).await?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden_ip(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450::1",
            "195.158.1.1",
        ] {
            assert!(
                !is_forbidden_ip(ip.parse().unwrap()),
                "{ip} must be allowed"
            );
        }
    }

    #[test]
    fn url_syntax() {
        assert!(validate_url("https://example.com/hook").is_ok());
        assert!(validate_url("ftp://example.com/").is_err());
        assert!(validate_url("not a url").is_err());
        assert!(validate_url("https://user:pw@example.com/").is_err());
        assert!(validate_url("").is_err());
    }

    #[tokio::test]
    async fn private_targets_refused_unless_allowed() {
        for u in [
            "http://127.0.0.1:9/x",
            "http://localhost:9/x",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://[fd00:ec2::254]/",
        ] {
            let e = check_url(u, false).await.unwrap_err();
            assert!(
                e.0.contains("non-public") || e.0.contains("does not resolve"),
                "{u}: {e}"
            );
        }
        assert!(check_url("http://127.0.0.1:9/x", true).await.is_ok());
    }
}
