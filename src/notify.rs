//! systemd's `sd_notify` protocol: READY=1 once serving, STOPPING=1 on stop (Type=notify).
//!
//! One datagram to the socket named by NOTIFY_SOCKET (a path, or `@name` in the abstract
//! namespace). A dozen lines, so no crate.

use std::os::unix::net::UnixDatagram;

/// Sends `state` if NOTIFY_SOCKET is set; errors are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!(target: "twistrs.launcher", "sd_notify {state}: {e}");
    }
}
