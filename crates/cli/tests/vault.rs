//! `savdo vault rotate` re-seals webhook signing secrets with the new key, and neither the
//! current nor the previous secret is readable in the SQLite file or its WAL.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_savdo");

fn savdo() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "SAVDO_DATABASE_URL",
        "SAVDO_CONFIG",
        "SAVDO_DATA_DIR",
        "SAVDO_LISTEN",
        "SAVDO_MASTER_KEY",
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

/// A plain HTTP/1.1 request: the status code and the body.
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
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
    (status, body)
}

fn json_of(body: &str) -> Value {
    // The server may answer chunked: the JSON object is between the outer braces.
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    serde_json::from_str(&body[start..=end]).expect("JSON")
}

fn stdout_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "savdo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(s.trim()).expect("one JSON object on stdout")
}

#[test]
fn vault_rotate_reseals_webhook_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = stdout_json(
        savdo()
            .args(["tenant", "create", "--name", "Shop", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap(),
    );
    let token = tenant["token"].as_str().unwrap().to_owned();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        savdo()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env("SAVDO_WEBHOOKS_ALLOW_PRIVATE", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start savdo serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err()
        || call(port, "GET", "/healthz", None, None).0 != 200
    {
        assert!(Instant::now() < deadline, "savdo serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, b) = call(
        port,
        "POST",
        "/api/v1/webhooks",
        Some(&token),
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
    );
    assert_eq!(s, 201, "{b}");
    let w = json_of(&b);
    let old = w["secret"].as_str().unwrap().to_owned();
    let id = w["id"].as_str().unwrap().to_owned();
    let (s, b) = call(
        port,
        "POST",
        &format!("/api/v1/webhooks/{id}/rotate-secret"),
        Some(&token),
        None,
    );
    assert_eq!(s, 200, "{b}");
    let new = json_of(&b)["secret"].as_str().unwrap().to_owned();
    drop(server);

    let out = stdout_json(
        savdo()
            .args(["vault", "rotate", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap(),
    );
    let report = &out["webhooks"];
    assert_eq!(report["checked"], 1, "{out}");
    assert_eq!(report["resealed"], 1, "{out}");
    assert_eq!(report["failed"], json!([]), "{out}");
    assert_ne!(out["previous_key"], report["active_key"]);

    let mut file = std::fs::read(dir.path().join("savdo.db")).unwrap();
    file.extend(std::fs::read(dir.path().join("savdo.db-wal")).unwrap_or_default());
    for needle in [&old[6..], &new[6..], "whsec_"] {
        assert!(
            !file.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "a secret is readable in the database ({:.8})",
            needle
        );
    }
    // Every sealed value names the new key.
    let key = report["active_key"].as_str().unwrap();
    let sealed = format!("v1:{key}:");
    let count = file
        .windows(sealed.len())
        .filter(|w| *w == sealed.as_bytes())
        .count();
    assert!(count >= 2, "current and previous secret under {key}");
}
