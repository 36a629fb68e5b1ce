//! The real binary as an operator runs it: `safedelete serve` in a child
//! process with its logs captured, stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{config_text, Extra};

pub const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

pub struct Proc {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `safedelete serve --config FILE` and waits for its listening line.
    pub fn start(config: &Path, log_filter: &str) -> Proc {
        Proc::start_with(Command::new(BIN), config, log_filter)
    }

    /// The same, with at most `open_files` file descriptors (`prlimit`).
    pub fn start_with_open_files(config: &Path, log_filter: &str, open_files: u32) -> Proc {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(BIN);
        Proc::start_with(command, config, log_filter)
    }

    pub fn start_with(mut command: Command, config: &Path, log_filter: &str) -> Proc {
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .env("SAFEDELETE_LOG_FORMAT", "json")
            .env("SAFEDELETE_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let buf = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // Kept before it is announced, so `logs()` already holds it.
                {
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
                if line.contains("safedelete listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            buf.lock().unwrap().push_str(&s);
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            // Never leave a gateway behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line; stderr: {}", stderr.lock().unwrap());
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Proc {
            child,
            proxy: v["proxy"].as_str().unwrap().parse().unwrap(),
            admin: v["admin"].as_str().unwrap().parse().unwrap(),
            stdout,
            stderr,
        }
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.proxy, target)
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the readers finish
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("safedelete did not exit within 10 s of SIGTERM");
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|l| l.strip_prefix(':')))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// User and system CPU time so far, in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Resets `VmHWM` to the current RSS (`/proc/PID/clear_refs`).
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn logs(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished command's standard output; fails the test, with its stderr,
/// when the command did not succeed.
pub fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A finished command's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn write_config(dir: &Path, upstream: &str, extra: Extra<'_>) -> (PathBuf, PathBuf) {
    let db = dir.join("data").join("safedelete.db");
    let path = dir.join("safedelete.toml");
    std::fs::write(&path, config_text(upstream, &db, extra)).unwrap();
    (path, db)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Holds `count` connections that each send `head_bytes` of a request head
/// that never ends; returns them once every one has been sent or refused.
pub async fn head_flood(
    addr: SocketAddr,
    count: usize,
    head_bytes: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            let mut head = b"GET /api/v1/campaigns HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
            head.resize(head_bytes, b'a');
            // The gateway may answer 431 and close before all of it is sent.
            let _ = tokio::time::timeout(Duration::from_secs(20), s.write_all(&head)).await;
            Some(s)
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some(s) = joined.unwrap() {
            held.push(s);
        }
    }
    held
}
