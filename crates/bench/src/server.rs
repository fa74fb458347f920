//! A real `savdo` server in a child process: found next to this binary, started on a free
//! loopback port over a given database, stopped with SIGTERM (or killed, for drills).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The `savdo` binary: `--savdo-bin`, else next to this executable.
pub fn savdo_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("executable without a directory")?;
    let p = dir.join("savdo");
    if !p.exists() {
        bail!(
            "no savdo binary next to {} (build it: cargo build --release -p savdo -p savdo-bench), or pass --savdo-bin",
            me.display()
        );
    }
    Ok(p)
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `savdo tenant create`: returns (tenant id, owner token).
pub async fn create_tenant(
    bin: &Path,
    data_dir: &Path,
    db_url: &str,
) -> anyhow::Result<(uuid::Uuid, String)> {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--database-url")
        .arg(db_url)
        .args(["tenant", "create", "--name", "Bench shop"])
        .env("SAVDO_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run savdo tenant create")?;
    if !out.status.success() {
        bail!(
            "savdo tenant create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("tenant create printed no JSON")?;
    let tenant = v["tenant_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("no tenant_id")?;
    let token = v["token"].as_str().context("no token")?.to_string();
    Ok((tenant, token))
}

pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub base: String,
}

impl Server {
    /// Start `savdo serve` and wait until `/healthz` answers (at most 60 s).
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        db_url: &str,
        port: u16,
        log: &Path,
        no_workers: bool,
    ) -> anyhow::Result<Server> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(db_url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(no_workers.then_some("--no-workers"))
            .env("SAVDO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start savdo serve")?;
        let pid = child.id().context("server exited at once")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut s = Server { child, pid, base };
        s.wait_ready(Duration::from_secs(60)).await?;
        Ok(s)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let http = crate::setup::client()?;
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("savdo serve exited during start ({st}); see its log");
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("savdo serve did not answer /healthz within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait (killed after 15 s).
    pub async fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
