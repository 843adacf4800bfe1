//! Progress on standard error for anything slower than a second, so that standard output
//! holds only the command's result (text or `--json`).

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// Prints progress lines to stderr (unless quiet), stamped with the time since the start.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
    started: Instant,
}

/// How long an operation may run before its progress line is shown.
const SHOW_AFTER: Duration = Duration::from_secs(1);

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            started: Instant::now(),
        }
    }

    /// One progress line now.
    pub fn note(&self, message: impl std::fmt::Display) {
        if self.enabled {
            let elapsed = self.started.elapsed().as_secs_f64();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "[{elapsed:6.1}s] {message}");
        }
    }

    /// Runs `work`; when it takes longer than a second, says what is being waited for, and
    /// how long it took once done.
    pub async fn run<T>(&self, label: &str, work: impl Future<Output = T>) -> T {
        let begun = Instant::now();
        tokio::pin!(work);
        let mut shown = false;
        let mut tick = SHOW_AFTER;
        loop {
            match tokio::time::timeout(tick, &mut work).await {
                Ok(value) => {
                    if shown {
                        self.note(format_args!(
                            "{label}: done in {:.1}s",
                            begun.elapsed().as_secs_f64()
                        ));
                    }
                    return value;
                }
                Err(_) => {
                    if shown {
                        self.note(format_args!(
                            "{label}: still waiting ({:.0}s)",
                            begun.elapsed().as_secs_f64()
                        ));
                    } else {
                        self.note(format_args!("{label} ..."));
                        shown = true;
                    }
                    tick = Duration::from_secs(5);
                }
            }
        }
    }
}
