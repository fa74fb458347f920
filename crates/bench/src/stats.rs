//! Latency histograms, process counters from `/proc`, and the shape of a report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 60_000_000);
    h.saturating_record(us);
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n = {})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// CPU time (user + system) of a process in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks_per_second())
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2) may contain
/// spaces and parentheses, so the fields are counted after its closing parenthesis.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Peak resident set size (VmHWM) of a process in MiB, from `/proc/<pid>/status`.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The machine's state, printed with every report: figures from a busy machine are noise.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub load_avg_1m: Option<f64>,
    /// Share of all CPUs' time spent busy during the second before the run. The 1-minute load
    /// average also counts the tail of the previous run; this says whether anything is running
    /// now.
    pub busy_before: Option<f64>,
}

/// Above this share of the machine busy before a run, its figures are labelled `BUSY`.
const BUSY_SHARE: f64 = 0.25;

impl MachineInfo {
    pub fn now() -> MachineInfo {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        MachineInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            load_avg_1m: load,
            busy_before: busy_share(std::time::Duration::from_secs(1)),
        }
    }

    pub fn line(&self) -> String {
        let mut line = format!("machine: {} CPUs", self.cpus);
        if let Some(l) = self.load_avg_1m {
            line.push_str(&format!(", load {l:.2}"));
        }
        if let Some(b) = self.busy_before {
            line.push_str(&format!(
                ", {:.0} % busy in the second before the run",
                b * 100.0
            ));
            if b > BUSY_SHARE {
                line.push_str(": BUSY, treat the figures as preliminary");
            }
        }
        line
    }
}

/// (busy, total) time of all CPUs, from the first line of `/proc/stat`.
fn parse_cpu_totals(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal; guest time is already in user and nice.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Share of the machine's CPU time spent busy over `window`.
fn busy_share(window: std::time::Duration) -> Option<f64> {
    let read = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_cpu_totals(&s))
    };
    let (busy0, total0) = read()?;
    std::thread::sleep(window);
    let (busy1, total1) = read()?;
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / total as f64)
}

/// Print a report as JSON (one object on stdout) or leave the human text already printed.
pub fn emit_json<T: Serialize>(json: bool, v: &T) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_totals_from_proc_stat() {
        let stat = "cpu  100 5 50 800 40 3 2 0 10 0\ncpu0 50 2 25 400 20 1 1 0 5 0\n";
        // busy = user + nice + system + irq + softirq + steal; idle and iowait are not.
        assert_eq!(parse_cpu_totals(stat), Some((160, 1000)));
        assert_eq!(parse_cpu_totals("intr 1 2 3"), None);
        assert_eq!(parse_cpu_totals("cpu 1 2"), None);
    }

    #[test]
    fn busy_label_follows_the_last_second() {
        let m = |busy| MachineInfo {
            cpus: 2,
            load_avg_1m: Some(1.9),
            busy_before: Some(busy),
        };
        assert!(!m(0.03).line().contains("BUSY"), "{}", m(0.03).line());
        assert!(m(0.6).line().contains("BUSY"));
    }

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "1234 (savdo (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tsavdo\nVmPeak:\t  200000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM:"), Some(51200));
        assert_eq!(parse_status_kib(s, "VmRSS:"), Some(40960));
        assert_eq!(parse_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = histogram();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn this_process_has_counters() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_mib(me).unwrap() > 0.0);
    }
}
