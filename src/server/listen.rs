//! The proxy's listening sockets: one per worker, bound to the same address
//! with `SO_REUSEPORT`, so the kernel spreads new connections over the
//! workers and a connection is accepted, served and closed on one thread.
//!
//! `SO_REUSEPORT` would also let a second gateway (same user) bind the same
//! address by mistake and silently take a share of the traffic. A lock tied
//! to the address prevents that: an abstract Unix socket named after it,
//! which the kernel releases when the process ends, however it ends, and
//! which lives in the network namespace the port does (so two containers do
//! not see each other's). A gateway that finds it held refuses to start.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// Connections the kernel queues for a listener before refusing more.
const LISTEN_BACKLOG: u32 = 4096;

/// Why the proxy cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another safedelete gateway on this host is listening on {addr}; stop it, or give this one \
         another `listen` address"
    )]
    Taken { addr: SocketAddr },
    #[error("cannot take the lock of the listen address {addr}: {source}")]
    Lock {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as the gateway listens on an address.
#[derive(Debug)]
pub struct ListenLock {
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixListener,
}

impl ListenLock {
    /// Takes the lock of `addr`, or says another gateway holds it.
    #[cfg(target_os = "linux")]
    pub fn take(addr: SocketAddr) -> Result<ListenLock, ListenError> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("safedelete-listen-{addr}");
        let lock_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|source| ListenError::Lock { addr, source })?;
        match std::os::unix::net::UnixListener::bind_addr(&lock_addr) {
            Ok(socket) => Ok(ListenLock { _socket: socket }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ListenError::Taken { addr }),
            Err(source) => Err(ListenError::Lock { addr, source }),
        }
    }

    /// Elsewhere there is no lock, and no `SO_REUSEPORT` either (see [`bind`]).
    #[cfg(not(target_os = "linux"))]
    pub fn take(_addr: SocketAddr) -> Result<ListenLock, ListenError> {
        Ok(ListenLock {})
    }
}

/// The proxy's sockets, `count` of them on one address, and the lock that
/// keeps the address this gateway's alone.
pub fn bind_proxy(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, ListenLock), ListenError> {
    // A fixed address is locked before it is bound; port 0 is the kernel's
    // choice, which no other gateway can know before it is bound.
    let bound_addr = |l: &std::net::TcpListener| {
        l.local_addr().map_err(|source| ListenError::Bind {
            what: "proxy listener",
            addr,
            source,
        })
    };
    let (first, lock) = if addr.port() == 0 {
        let first = bind("proxy listener", addr, true)?;
        let lock = ListenLock::take(bound_addr(&first)?)?;
        (first, lock)
    } else {
        let lock = ListenLock::take(addr)?;
        (bind("proxy listener", addr, true)?, lock)
    };
    let bound = bound_addr(&first)?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(if cfg!(target_os = "linux") {
            bind("proxy listener", bound, true)?
        } else {
            sockets[0].try_clone().map_err(|source| ListenError::Bind {
                what: "proxy listener",
                addr: bound,
                source,
            })?
        });
    }
    Ok((sockets, lock))
}

/// One listening socket (with `SO_REUSEPORT` on Linux when `shared`), not
/// yet registered with any runtime: whoever accepts on it registers it.
pub fn bind(
    what: &'static str,
    addr: SocketAddr,
    shared: bool,
) -> Result<std::net::TcpListener, ListenError> {
    let err = |source| ListenError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    #[cfg(target_os = "linux")]
    if shared {
        socket.set_reuseport(true).map_err(err)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = shared;
    socket.bind(addr).map_err(err)?;
    // A deep backlog: connections past `max_connections` wait there (the
    // kernel caps it at net.core.somaxconn).
    let listener = socket.listen(LISTEN_BACKLOG).map_err(err)?;
    listener.into_std().map_err(err)
}
