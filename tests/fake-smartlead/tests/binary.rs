//! The `fake-smartlead` binary: announces its address, serves, exits 0 on SIGTERM.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_binary_announces_its_address_serves_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-smartlead"))
        .args(["--listen", "127.0.0.1:0", "--leads", "3", "--api-key", "k2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("fake-smartlead listening on http://")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_owned();

    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /api/v1/campaigns/101/leads-export?api_key=k2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(response.matches("@example101.com").count(), 3);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}
