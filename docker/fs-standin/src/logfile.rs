//! freeswitch.log in the 1.10.12 format:
//! `YYYY-MM-DD HH:MM:SS.uuuuuu NN.NN% [LEVEL] file.c:LINE message`, NN.NN% being the IDLE cpu.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Console,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Console => "CONSOLE",
            Level::Error => "ERR",
            Level::Warning => "WARNING",
            Level::Notice => "NOTICE",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// Idle cpu in hundredths of a percent, kept fresh from /proc/stat deltas.
#[derive(Debug, Clone)]
pub struct CpuIdle(Arc<AtomicU32>);

/// Used when /proc/stat cannot be read.
const FALLBACK_IDLE: u32 = 9950;

impl CpuIdle {
    pub fn new() -> Self {
        let initial = read_proc_stat()
            .map(|(idle, total)| idle_hundredths(idle, total))
            .unwrap_or(FALLBACK_IDLE);
        CpuIdle(Arc::new(AtomicU32::new(initial)))
    }

    pub fn percent(&self) -> f64 {
        f64::from(self.0.load(Ordering::Relaxed)) / 100.0
    }

    /// Sample once a second for the life of the process.
    pub fn spawn_sampler(&self) {
        let cell = self.0.clone();
        std::thread::spawn(move || {
            let mut prev = read_proc_stat();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let now = read_proc_stat();
                if let (Some((i0, t0)), Some((i1, t1))) = (prev, now)
                    && t1 > t0
                {
                    cell.store(
                        idle_hundredths(i1.saturating_sub(i0), t1 - t0),
                        Ordering::Relaxed,
                    );
                }
                prev = now;
            }
        });
    }
}

impl Default for CpuIdle {
    fn default() -> Self {
        Self::new()
    }
}

fn idle_hundredths(idle: u64, total: u64) -> u32 {
    if total == 0 {
        return FALLBACK_IDLE;
    }
    ((idle as f64 / total as f64) * 10000.0)
        .round()
        .clamp(0.0, 10000.0) as u32
}

/// (idle+iowait, total) jiffies from the first line of /proc/stat.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let first = text.lines().next()?;
    let nums: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    if nums.len() < 4 {
        return None;
    }
    let idle = nums[3] + nums.get(4).copied().unwrap_or(0);
    Some((idle, nums.iter().take(8).sum()))
}

/// Appends to `<log-dir>/freeswitch.log`; opened per line so rotation and deletion just work.
#[derive(Debug, Clone)]
pub struct Logger {
    path: PathBuf,
    cpu: CpuIdle,
    lock: Arc<Mutex<()>>,
}

impl Logger {
    pub fn new(path: PathBuf, cpu: CpuIdle) -> Self {
        Logger {
            path,
            cpu,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The prefixed line; `extra` lines (continuations) follow unprefixed, as FreeSWITCH does.
    pub fn format(&self, level: Level, src: &str, msg: &str) -> String {
        let now = chrono::Local::now();
        format!(
            "{} {:.2}% [{}] {} {}\n",
            now.format("%Y-%m-%d %H:%M:%S%.6f"),
            self.cpu.percent(),
            level.as_str(),
            src,
            msg
        )
    }

    pub fn log(&self, level: Level, src: &str, msg: &str) {
        let line = self.format(level, src, msg);
        self.write_raw(&line);
    }

    /// Several lines written in one go so concurrent writers cannot interleave them.
    pub fn write_raw(&self, text: &str) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = res {
            eprintln!(
                "fs-standin: cannot write {}: {e} (check --log-dir and its permissions)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_matches_1_10_12() {
        let dir = tempfile::tempdir().unwrap();
        let l = Logger::new(dir.path().join("freeswitch.log"), CpuIdle::new());
        l.log(Level::Warning, "sofia_reg.c:1787", "hello");
        let text = std::fs::read_to_string(dir.path().join("freeswitch.log")).unwrap();
        let line = text.trim_end();
        // 2026-11-24 19:30:31.066257 98.13% [WARNING] sofia_reg.c:1787 hello
        let b = line.as_bytes();
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b' ', b':', b':', b'.')
        );
        assert!(line[20..26].bytes().all(|c| c.is_ascii_digit()), "{line}");
        let rest = &line[27..];
        let (pct, tail) = rest.split_once("% ").unwrap();
        let (whole, frac) = pct.split_once('.').unwrap();
        assert!(
            whole.parse::<u32>().unwrap() <= 100 && frac.len() == 2,
            "{line}"
        );
        assert_eq!(tail, "[WARNING] sofia_reg.c:1787 hello");
    }

    #[test]
    fn idle_ratio() {
        assert_eq!(idle_hundredths(9813, 10000), 9813);
        assert_eq!(idle_hundredths(0, 0), FALLBACK_IDLE);
    }
}
