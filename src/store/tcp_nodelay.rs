//! `TCP_NODELAY` on this process's PostgreSQL connections.
//!
//! sqlx 0.9.0 no longer sets it on the sockets it opens (transact-rs/sqlx
//! issue 4335; fixed upstream by pull request 4336, not in a release as of
//! 0.9.0). With Nagle's algorithm on, a message that ends in a partial TCP
//! segment is held until the server acknowledges the previous segment, and
//! the server delays that acknowledgement: about 40 ms on Linux. Measured
//! here: every page of a whole-repo import into PostgreSQL waited 41–50 ms
//! between taking its locks and the server receiving its upsert (the
//! server's statement log), and the import used under a third of a core.
//!
//! sqlx gives no access to its socket, so after each new connection the
//! pool's `after_connect` calls [`set_on_connections_to`], which sets the
//! option on every TCP socket of this process whose peer port is the
//! server's. Setting it on a socket that has it already, or on another
//! connection to that port, is harmless. Linux only (`/proc/self/fd`);
//! elsewhere it does nothing. Remove once a sqlx release sets it again.

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to a
/// peer on `port`; returns how many it changed.
#[cfg(target_os = "linux")]
pub fn set_on_connections_to(port: u16) -> std::io::Result<usize> {
    let mut changed = 0;
    for_each_connection_to(port, |sock| {
        if sock.tcp_nodelay().is_ok_and(|on| !on) && sock.set_tcp_nodelay(true).is_ok() {
            changed += 1;
        }
    })?;
    Ok(changed)
}

#[cfg(not(target_os = "linux"))]
pub fn set_on_connections_to(_port: u16) -> std::io::Result<usize> {
    Ok(0)
}

/// Whether every TCP socket of this process connected to `port` has
/// `TCP_NODELAY` (and there is at least one).
#[cfg(target_os = "linux")]
pub fn all_set_to(port: u16) -> std::io::Result<bool> {
    let (mut seen, mut set) = (0, 0);
    for_each_connection_to(port, |sock| {
        seen += 1;
        set += usize::from(sock.tcp_nodelay().unwrap_or(false));
    })?;
    Ok(seen > 0 && set == seen)
}

/// Calls `f` with each socket of this process whose peer port is `port`
/// (a socket closed meanwhile has no peer and is skipped; `f`'s option
/// calls on one closed after that fail, and `f` treats that as not set).
#[cfg(target_os = "linux")]
fn for_each_connection_to(
    port: u16,
    mut f: impl FnMut(&socket2::SockRef<'_>),
) -> std::io::Result<()> {
    for fd in connected_sockets()? {
        // SAFETY: `fd` was open in this process a moment ago and the
        // borrow lasts only for the option calls below. Should another
        // thread close it meanwhile, the calls fail (EBADF, ENOTSOCK) or,
        // if the number was reused for another socket, read its peer port
        // first: nothing but a socket option is ever changed.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let to_port = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if to_port {
            f(&sock);
        }
    }
    Ok(())
}

/// The numbers of this process's open file descriptors that are sockets.
#[cfg(target_os = "linux")]
fn connected_sockets() -> std::io::Result<Vec<std::os::fd::RawFd>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if is_socket {
            out.push(fd);
        }
    }
    Ok(out)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn sets_the_option_on_the_sockets_to_the_port_only() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let to_server = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_server.nodelay().unwrap(), "a new socket has Nagle on");
        assert!(!all_set_to(port).unwrap());

        assert_eq!(set_on_connections_to(port).unwrap(), 1);
        assert!(to_server.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap(), "only sockets to the port");
        assert!(all_set_to(port).unwrap());
        assert_eq!(set_on_connections_to(port).unwrap(), 0, "already set");
    }
}
