//! Progress of a fleet run on stderr: one spinner per running host plus an overall bar on a
//! terminal, plain `host: what` lines otherwise. Never stdout: that is for the report.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::HostStatus;

/// `--no-progress` maps to `Never`; `Auto` draws bars only when stderr is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    #[default]
    Auto,
    Never,
}

/// Where plain lines go (stderr in production, a buffer in tests).
pub(crate) type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

#[derive(Clone)]
pub(crate) enum Progress {
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        failed: Arc<AtomicUsize>,
    },
    Lines {
        sink: Sink,
        verbosity: i8,
    },
}

/// One host's line: a spinner, or the name to prefix plain lines with.
#[derive(Clone)]
pub(crate) enum HostLine {
    Bar(ProgressBar),
    Text {
        name: String,
        sink: Sink,
        verbosity: i8,
    },
}

impl Progress {
    /// Bars when `mode` is Auto, stderr is a terminal and neither quiet nor verbose; plain lines
    /// otherwise.
    pub(crate) fn new(mode: ProgressMode, verbosity: i8, total: usize) -> Progress {
        // -v and -vv are a log of what runs on each host: plain lines, which bars would repaint.
        if mode == ProgressMode::Auto && verbosity == 0 && std::io::stderr().is_terminal() {
            Progress::bars(total)
        } else {
            Progress::lines(Arc::new(Mutex::new(Box::new(std::io::stderr()))), verbosity)
        }
    }

    pub(crate) fn lines(sink: Sink, verbosity: i8) -> Progress {
        Progress::Lines { sink, verbosity }
    }

    fn bars(total: usize) -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total as u64));
        // The templates are constants; a bad one would only lose the styling, not the run.
        if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos}/{len} hosts done  {msg}")
        {
            overall.set_style(style.progress_chars("=> "));
        }
        overall.set_message("0 failed");
        Progress::Bars {
            multi,
            overall,
            failed: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn host_started(&self, name: &str) -> HostLine {
        match self {
            Progress::Bars { multi, overall, .. } => {
                let bar = multi.insert_before(overall, ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix:20} {msg}") {
                    bar.set_style(style);
                }
                bar.set_prefix(name.to_string());
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(120));
                HostLine::Bar(bar)
            }
            Progress::Lines { sink, verbosity } => {
                if *verbosity >= 0 {
                    write_line(sink, &format!("{name}: started"));
                }
                HostLine::Text {
                    name: name.to_string(),
                    sink: sink.clone(),
                    verbosity: *verbosity,
                }
            }
        }
    }

    /// A host ended: its line, with `word` for its status (`would change` under `--check`) and
    /// `failure` (why it failed) when it did.
    pub(crate) fn host_finished(
        &self,
        line: &HostLine,
        name: &str,
        elapsed_ms: u64,
        status: HostStatus,
        word: &str,
        failure: Option<&str>,
    ) {
        let text = finish_line(name, elapsed_ms, status, word, failure);
        match (self, line) {
            (
                Progress::Bars {
                    multi,
                    overall,
                    failed,
                },
                HostLine::Bar(bar),
            ) => {
                bar.finish_and_clear();
                multi.remove(bar);
                overall.inc(1);
                if status.is_failure() {
                    let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                    overall.set_message(format!("{n} failed"));
                }
                // println keeps the line above the bars; a closed stderr is not worth failing on.
                let _ = multi.println(text);
            }
            (Progress::Lines { sink, verbosity }, _) => {
                // Quiet mode still shows what went wrong.
                if *verbosity >= 0 || status.is_failure() {
                    write_line(sink, &text);
                }
            }
            (Progress::Bars { .. }, HostLine::Text { .. }) => {}
        }
    }

    /// A message the operator must see whatever the verbosity (the Ctrl-C prompt).
    pub(crate) fn notice(&self, msg: &str) {
        match self {
            Progress::Bars { multi, .. } => {
                let _ = multi.println(msg);
            }
            Progress::Lines { sink, .. } => write_line(sink, msg),
        }
    }

    /// Clear the bars before the recap is printed.
    pub(crate) fn finish(&self) {
        if let Progress::Bars { multi, overall, .. } = self {
            overall.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

tokio::task_local! {
    /// The progress line of the host whose task is running, so the transport can say what it
    /// runs on that host (`-v`: each remote command's purpose and time; `-vv`: its script)
    /// without every caller passing the line down.
    static TRACE: HostLine;
}

/// Runs a host's task with its progress line as the target of [`trace`].
pub(crate) async fn traced<F: std::future::Future>(line: HostLine, fut: F) -> F::Output {
    TRACE.scope(line, fut).await
}

/// A detail line for the current host's task, shown from verbosity `level` (1: `-v`, 2: `-vv`)
/// on; nothing outside a host's task. `msg` is escaped; each of its lines is prefixed.
pub fn trace(level: i8, msg: &str) {
    let _ = TRACE.try_with(|line| line.trace(level, msg));
}

/// Whether [`trace`] at `level` would print (to skip building an expensive message).
pub fn tracing(level: i8) -> bool {
    TRACE
        .try_with(|line| match line {
            HostLine::Text { verbosity, .. } => *verbosity >= level,
            HostLine::Bar(_) => false,
        })
        .unwrap_or(false)
}

impl HostLine {
    fn trace(&self, level: i8, msg: &str) {
        if let HostLine::Text {
            name,
            sink,
            verbosity,
        } = self
            && *verbosity >= level
        {
            for l in msg.lines() {
                write_line(sink, &format!("{name}: {}", crate::display::line(l)));
            }
        }
    }

    pub(crate) fn stage(&self, msg: &str) {
        match self {
            HostLine::Bar(bar) => bar.set_message(crate::display::line(msg).into_owned()),
            HostLine::Text {
                name,
                sink,
                verbosity,
            } => {
                if *verbosity >= 1 {
                    write_line(sink, &format!("{name}: {}", crate::display::line(msg)));
                }
            }
        }
    }
}

pub(crate) fn finish_line(
    name: &str,
    elapsed_ms: u64,
    status: HostStatus,
    word: &str,
    failure: Option<&str>,
) -> String {
    let secs = elapsed_ms as f64 / 1000.0;
    let line = match failure {
        Some(why) if status.is_failure() => {
            format!("{name}: {word} ({secs:.1}s): {}", why.replace('\n', " / "))
        }
        _ => format!("{name}: {word} ({secs:.1}s)"),
    };
    // Errors quote what the host said: escaped before they reach the terminal.
    crate::display::line(&line).into_owned()
}

fn write_line(sink: &Sink, line: &str) {
    // Progress is best effort: a poisoned lock or a closed stderr must not stop the run.
    if let Ok(mut w) = sink.lock() {
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }
}
