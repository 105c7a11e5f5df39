//! Server addresses.

use crate::error::ProtoError;

/// The transport a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Quic,
}

/// A parsed server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// SHA-256 fingerprint (lower-case hex) of the server certificate to pin.
    pub fingerprint: Option<String>,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<ServerUrl, ProtoError> {
        let bad = |reason: &str| ProtoError::BadAddress {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected tcp://host:port or quic://host:port"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            "quic" => Scheme::Quic,
            _ => return Err(bad("scheme must be tcp or quic")),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest.trim_end_matches('/'), None),
        };
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (h, p) = inner
                .split_once("]:")
                .ok_or_else(|| bad("IPv6 address needs [addr]:port"))?;
            (h.to_string(), p)
        } else {
            let (h, p) = authority.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
            (h.to_string(), p)
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port 0 is not an address"));
        }
        let mut fingerprint = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("fingerprint", v)) => {
                    let v = v.replace(':', "").to_ascii_lowercase();
                    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad("fingerprint must be 64 hex digits (SHA-256)"));
                    }
                    fingerprint = Some(v);
                }
                _ => return Err(bad("unknown query parameter (only fingerprint=)")),
            }
        }
        Ok(ServerUrl {
            scheme,
            host,
            port,
            fingerprint,
        })
    }

    /// `host:port` for socket APIs.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Tcp => "tcp",
            Scheme::Quic => "quic",
        };
        write!(f, "{s}://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_quic() {
        let u = ServerUrl::parse("tcp://127.0.0.1:7070").unwrap();
        assert_eq!((u.scheme, u.host.as_str(), u.port), (Scheme::Tcp, "127.0.0.1", 7070));
        let fp = "ab".repeat(32);
        let u = ServerUrl::parse(&format!("quic://[::1]:9?fingerprint={fp}")).unwrap();
        assert_eq!((u.scheme, u.host.as_str(), u.port), (Scheme::Quic, "::1", 9));
        assert_eq!(u.fingerprint.as_deref(), Some(fp.as_str()));
        assert_eq!(u.to_string(), "quic://[::1]:9");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "127.0.0.1:1",
            "http://a:1",
            "tcp://a",
            "tcp://:1",
            "tcp://a:0",
            "tcp://a:99999",
            "quic://a:1?fingerprint=zz",
            "tcp://a:1?x=1",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
