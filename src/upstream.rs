//! Where a deployment's requests go: its `api_base` split into the parts
//! Envoy needs (TLS or not, host, port, path prefix), and the name of the
//! Envoy cluster that reaches it.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash: `/v1`, or empty.
    pub base_path: String,
}

/// How cluster names are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterNaming {
    /// `tollgate|https|api.openai.com|443`: the clusters `tollgate render` writes.
    #[default]
    Tollgate,
    /// `outbound|443||api.openai.com`: the clusters Istio creates for a ServiceEntry.
    Istio,
}

impl ClusterNaming {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tollgate" => Some(Self::Tollgate),
            "istio" => Some(Self::Istio),
            _ => None,
        }
    }
}

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("\"{url}\" must start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(format!("\"{url}\" must not carry a query or a fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("\"{url}\" must not carry credentials; use api_key"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("\"{url}\" has no valid host[:port]"))?;
        if path.contains(char::is_whitespace) {
            return Err(format!("\"{url}\" has white space in its path"));
        }
        Ok(Self {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The `Host`/`:authority` the provider expects.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let mut out = String::new();
        if self.host.contains(':') {
            let _ = write!(out, "[{}]", self.host);
        } else {
            out.push_str(&self.host);
        }
        if self.port != default_port {
            let _ = write!(out, ":{}", self.port);
        }
        out
    }

    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    pub fn cluster_name(&self, naming: ClusterNaming) -> String {
        match naming {
            ClusterNaming::Tollgate => format!(
                "tollgate|{}|{}|{}",
                if self.tls { "https" } else { "http" },
                self.host,
                self.port
            ),
            ClusterNaming::Istio => format!("outbound|{}||{}", self.port, self.host),
        }
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end);
        let after = after.strip_prefix(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        // Only an IPv6 address goes in brackets.
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let valid_host = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid_host {
            return None;
        }
        (host, port)
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_bases() {
        let u = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.base_path.as_str()), (true, "api.openai.com", 443, "/v1"));
        assert_eq!(u.authority(), "api.openai.com");
        assert_eq!(u.cluster_name(ClusterNaming::Tollgate), "tollgate|https|api.openai.com|443");
        assert_eq!(u.cluster_name(ClusterNaming::Istio), "outbound|443||api.openai.com");

        let u = UpstreamUrl::parse("http://127.0.0.1:8000/v1/").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 8000, "/v1"));
        assert_eq!(u.authority(), "127.0.0.1:8000");
        assert!(u.is_ip());

        let u = UpstreamUrl::parse("https://api.anthropic.com").unwrap();
        assert_eq!(u.base_path, "");

        let u = UpstreamUrl::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.authority(), "[::1]:9000");
    }

    #[test]
    fn rejects_bad_bases() {
        for bad in [
            "api.openai.com/v1",
            "ftp://x",
            "https://",
            "https://host:99999",
            "https://host:0",
            "https://user:pw@host",
            "https://host/v1?x=1",
            "https://ho st/v1",
            "http://[::1/x",
            "http://a:b:80/v1",
            "https://::1/v1",
            "http://[host]/v1",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
