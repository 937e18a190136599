//! portforward as a TLS terminator (issue 11): TLS from the client on an `ssl:` port,
//! plaintext through the core's relay to the backend.

use super::*;

#[test]
fn portforward_on_an_ssl_port_terminates_tls() {
    let pki = Pki::new();
    pki.leaf("server", "localhost", &["localhost"]);
    let backend = Server::start(&[
        "--pidfile=",
        "echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let listen = format!(
        "ssl:0:privateKey={}:certKey={}:interface=127.0.0.1",
        pki.arg("server-key.pem"),
        pki.arg("server-cert.pem")
    );
    let relay = Server::start(&[
        "--pidfile=",
        "portforward",
        "-p",
        &listen,
        "-h",
        "127.0.0.1",
        "-d",
        &backend.port().to_string(),
    ]);
    // The echo of "ping over TLS" came back from the plaintext echo server, through TLS.
    assert_serves(relay.port(), &pki.ca(), "localhost", "localhost");
    assert!(relay.log_contains("13 bytes to the destination, 13 bytes to the client"));
}
