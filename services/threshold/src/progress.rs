//! Progress of long command-line work (a manifest load, a simulated day, a
//! routing plan, an export) on stderr: a bar on a terminal, plain lines
//! otherwise (a line per tenth done), so logs and CI output stay readable.
//! Stdout is left to the command's results.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What is counted.
#[derive(Clone, Copy)]
pub(crate) enum Unit {
    /// Bytes, shown as KiB, MiB...
    Bytes,
    /// Things, named (`"routes"`).
    Items(&'static str),
}

/// One piece of work's progress.
pub(crate) struct Progress {
    label: String,
    unit: Unit,
    total: u64,
    done: AtomicU64,
    /// On a terminal.
    bar: Option<ProgressBar>,
    /// Off one: the last tenth a line was printed for.
    tenth: Mutex<u64>,
}

fn human(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes => {
            let n = n as f64;
            if n >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", n / (1024.0 * 1024.0))
            } else if n >= 1024.0 {
                format!("{:.1} KiB", n / 1024.0)
            } else {
                format!("{n} B")
            }
        }
        Unit::Items(_) => n.to_string(),
    }
}

impl Progress {
    /// Work of `total` units; a bar when stderr is a terminal.
    pub(crate) fn new(label: impl Into<String>, unit: Unit, total: u64) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let counts = match unit {
                Unit::Bytes => "{bytes}/{total_bytes}",
                Unit::Items(_) => "{pos}/{len}",
            };
            let style = ProgressStyle::with_template(&format!(
                "{{prefix}} [{{bar:30}}] {counts} {{msg}} ({{elapsed}}, {{eta}} left)"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(label.clone());
            if let Unit::Items(name) = unit {
                bar.set_message(name);
            }
            bar
        });
        Progress {
            label,
            unit,
            total,
            done: AtomicU64::new(0),
            bar,
            tenth: Mutex::new(0),
        }
    }

    /// Work whose size is not known: a spinner on a terminal, a line
    /// otherwise.
    pub(crate) fn waiting(label: impl Into<String>, what: &str) -> Self {
        let label = label.into();
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner().with_prefix(label.clone());
            bar.set_style(
                ProgressStyle::with_template("{prefix} {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            eprintln!("{label}: {what}");
            None
        };
        Progress {
            label,
            unit: Unit::Items(""),
            total: 0,
            done: AtomicU64::new(0),
            bar,
            tenth: Mutex::new(0),
        }
    }

    /// `n` more units done.
    pub(crate) fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.show(done);
    }

    /// `n` units done in all.
    pub(crate) fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    fn show(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.total == 0 {
            return;
        }
        let tenth = (done.min(self.total) * 10) / self.total;
        let Ok(mut last) = self.tenth.lock() else {
            return;
        };
        if tenth > *last {
            *last = tenth;
            let (done, total) = (done.min(self.total), self.total);
            let counts = match self.unit {
                Unit::Bytes => format!("{} of {}", human(self.unit, done), human(self.unit, total)),
                Unit::Items(name) => format!("{done} of {total} {name}"),
            };
            eprintln!("{}: {counts} ({}%)", self.label, tenth * 10);
        }
    }

    /// The work is over; `said` is its last word (on a terminal it replaces
    /// the bar; otherwise a line).
    pub(crate) fn finish(&self, said: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {said}", self.label);
    }
}

impl Progress {
    /// Prints a line of the command's own on stderr without tearing a bar.
    pub(crate) fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

/// A reader that counts what is read from it into a [`Progress`].
pub(crate) struct Counted<R> {
    inner: R,
    progress: std::sync::Arc<Progress>,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R, progress: std::sync::Arc<Progress>) -> Self {
        Counted { inner, progress }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            self.progress.add((buf.filled().len() - before) as u64);
        }
        polled
    }
}
