//! The `savdo` binary: `tenant create` prints one JSON object, and its token works against
//! `savdo serve` on the same data directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_savdo");

fn savdo() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "SAVDO_DATABASE_URL",
        "SAVDO_CONFIG",
        "SAVDO_DATA_DIR",
        "SAVDO_LISTEN",
    ] {
        c.env_remove(var);
    }
    c.env("SAVDO_LOG", "warn");
    c
}

/// Kills the server even when an assertion fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

fn tenant_create(dir: &std::path::Path, name: &str) -> serde_json::Value {
    let out = savdo()
        .args(["tenant", "create", "--name", name, "--data-dir"])
        .arg(dir)
        .output()
        .expect("run savdo");
    assert!(
        out.status.success(),
        "savdo tenant create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    let obj = v.as_object().expect("a JSON object");
    assert_eq!(obj.len(), 2, "{v}");
    uuid::Uuid::parse_str(v["tenant_id"].as_str().expect("tenant_id")).expect("a UUID");
    assert!(
        v["token"].as_str().expect("token").starts_with("svd_"),
        "{v}"
    );
    v
}

#[test]
fn tenant_create_prints_json_and_token_works_with_serve() {
    let dir = tempfile::tempdir().unwrap();
    let a = tenant_create(dir.path(), "Shop A");
    let b = tenant_create(dir.path(), "Shop B");
    assert_ne!(a["tenant_id"], b["tenant_id"]);
    assert_ne!(a["token"], b["token"]);

    // Refused input: a non-zero exit and nothing on stdout.
    let out = savdo()
        .args(["tenant", "create", "--name", "   ", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = savdo()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start savdo serve");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = get(port, "/healthz", None) {
            break;
        }
        assert!(Instant::now() < deadline, "savdo serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = a["token"].as_str().unwrap();
    let (status, body) = get(port, "/api/v1/settings", Some(token)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("default_vat_percent"), "{body}");
    let (status, _) = get(port, "/api/v1/tokens", Some(token)).unwrap();
    assert_eq!(status, 200, "the CLI's token is an owner token");
    let (status, _) = get(port, "/api/v1/stores", Some("svd_not_a_token")).unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(port, "/api/v1/stores", None).unwrap();
    assert_eq!(status, 401);
}
