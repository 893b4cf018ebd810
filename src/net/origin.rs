//! What URL an untrusted server may be reached at.
//!
//! Owns: [`check`] (the scheme and literal-address rule every guarded
//! request passes before it is sent) and [`pds_origin`] (a DID document's
//! `#atproto_pds` endpoint reduced to `scheme://host[:port]`: its path,
//! query, fragment and user info never reach the wire). Names are checked
//! again at connect time by [`super::address::PublicResolver`].

use std::net::IpAddr;

use url::{Host, Url};

use super::address::Policy;

/// Whether a request may go to `u`: `https`, at a public address when the
/// host is an IP literal. With `allow_private`, any address, and plain
/// `http` too when the host is `localhost` or a non-public IP literal (a
/// local test server).
pub fn check(u: &Url, policy: Policy) -> Result<(), String> {
    let ip: Option<IpAddr> = match u.host() {
        None => return Err("the URL has no host".into()),
        Some(Host::Ipv4(v4)) => Some(v4.into()),
        Some(Host::Ipv6(v6)) => Some(v6.into()),
        Some(Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && !policy.allows(ip)
    {
        return Err(format!(
            "{ip} is not a public address (refused; see identity.allow_private_addresses)"
        ));
    }
    match u.scheme() {
        "https" => Ok(()),
        "http"
            if policy.allow_private
                && (ip.is_some_and(|ip| !super::is_public(ip))
                    || u.host_str() == Some("localhost")) =>
        {
            Ok(())
        }
        "http" => Err(
            "plain http is refused (https only; see identity.allow_private_addresses for local servers)"
                .into(),
        ),
        _ => Err("the URL is not https".into()),
    }
}

/// A `#atproto_pds` endpoint as the origin requests go to, or why it is
/// refused.
pub fn pds_origin(endpoint: &str, policy: Policy) -> Result<String, String> {
    let u = Url::parse(endpoint).map_err(|_| "the PDS endpoint is not a URL".to_owned())?;
    check(&u, policy).map_err(|e| format!("PDS endpoint refused: {e}"))?;
    Ok(u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: Policy = Policy {
        allow_private: false,
    };
    const ON: Policy = Policy {
        allow_private: true,
    };

    #[test]
    fn endpoints_are_origins_only() {
        assert_eq!(
            pds_origin("https://pds.example.com/xrpc/evil?x=1#frag", OFF).as_deref(),
            Ok("https://pds.example.com")
        );
        assert_eq!(
            pds_origin("https://user:pw@pds.example.com:8443/", OFF).as_deref(),
            Ok("https://pds.example.com:8443")
        );
        assert_eq!(
            pds_origin("http://127.0.0.1:2583/a/b?c#d", ON).as_deref(),
            Ok("http://127.0.0.1:2583")
        );
    }

    #[test]
    fn private_addresses_and_plain_http_need_the_opt_in() {
        for e in [
            "http://127.0.0.1:2583",
            "https://127.0.0.1:2583",
            "https://169.254.169.254",
            "https://[::1]:2583",
            "https://[fd00::1]",
            "https://100.64.0.1",
            "http://pds.example.com",
            "http://localhost:2583",
            "ftp://pds.example.com",
            "https://0.0.0.0",
        ] {
            assert!(pds_origin(e, OFF).is_err(), "{e} must be refused");
        }
        for e in [
            "http://127.0.0.1:2583",
            "https://169.254.169.254",
            "http://localhost:2583",
        ] {
            assert!(pds_origin(e, ON).is_ok(), "{e} is allowed with the opt-in");
        }
        // The opt-in allows plain http to local servers only.
        assert!(pds_origin("http://pds.example.com", ON).is_err());
        assert!(pds_origin("http://8.8.8.8", ON).is_err());
    }
}
