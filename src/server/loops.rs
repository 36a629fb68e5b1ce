//! The start-up loop check: a gateway whose upstream leads back to its own
//! listener (SmartLead's name pointed at the gateway in this host's hosts
//! file) would forward every request to itself. It refuses to start instead.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::config::Upstream;

/// How long the start-up check waits for the upstream's name to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// The upstream connects to one of this gateway's listeners.
#[derive(Debug, thiserror::Error)]
#[error(
    "the upstream {upstream} leads to {target}, which is this gateway's own {listener} listener ({listen}): \
     every request would come back to it. {fix}"
)]
pub struct UpstreamLoop {
    pub upstream: String,
    pub target: SocketAddr,
    pub listener: &'static str,
    pub listen: SocketAddr,
    fix: &'static str,
}

/// Where the upstream's connections would go: `connect_to`, or what its
/// host resolves to now. `None` when it cannot be resolved (SmartLead's
/// name may be briefly unresolvable; that is not a loop).
pub async fn upstream_targets(upstream: &Upstream) -> Option<Vec<SocketAddr>> {
    if !upstream.connect_to.is_empty() {
        return Some(upstream.connect_to.clone());
    }
    let port = upstream
        .authority
        .port_u16()
        .unwrap_or(if upstream.is_https() { 443 } else { 80 });
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(RESOLVE_WITHIN, lookup).await {
        Ok(Ok(addrs)) => Some(addrs.collect()),
        _ => None,
    }
}

/// Refuses targets that are this gateway's own listeners.
pub fn check(
    upstream: &Upstream,
    targets: &[SocketAddr],
    listeners: &[(&'static str, SocketAddr)],
) -> Result<(), UpstreamLoop> {
    for target in targets {
        for (listener, listen) in listeners {
            if leads_to(*target, *listen) {
                let fix = if upstream.connect_to.is_empty() {
                    "On the gateway's own host, SmartLead's name must lead to SmartLead: set [upstream] \
                     connect_to = \"IP:443\" to its real address (for example from `dig +short server.smartlead.ai @1.1.1.1`), \
                     or remove the hosts entry that points the name at this host"
                } else {
                    "Point [upstream] connect_to at SmartLead's real address, not at this gateway"
                };
                return Err(UpstreamLoop {
                    upstream: upstream.url(),
                    target: *target,
                    listener,
                    listen: *listen,
                    fix,
                });
            }
        }
    }
    Ok(())
}

/// Whether a connection to `target` reaches a socket listening on `listen`.
fn leads_to(target: SocketAddr, listen: SocketAddr) -> bool {
    if target.port() != listen.port() {
        return false;
    }
    if target.ip() == listen.ip() {
        return true;
    }
    listen.ip().is_unspecified() && is_this_host(target.ip())
}

/// Whether `ip` is one of this host's addresses: only those can be bound.
fn is_this_host(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_target_leads_to_a_listener_on_its_address_or_on_every_address() {
        assert!(leads_to(addr("127.0.0.1:443"), addr("127.0.0.1:443")));
        assert!(leads_to(addr("127.0.0.1:443"), addr("0.0.0.0:443")));
        assert!(leads_to(addr("[::1]:443"), addr("[::]:443")));
        assert!(!leads_to(addr("127.0.0.1:443"), addr("127.0.0.1:8443")));
        assert!(!leads_to(addr("127.0.0.2:443"), addr("127.0.0.1:443")));
        // Not an address of this host (TEST-NET-3).
        assert!(!leads_to(addr("203.0.113.7:443"), addr("0.0.0.0:443")));
    }
}
