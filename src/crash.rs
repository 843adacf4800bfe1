//! Crash points for the fault-matrix tests. With the `crash-points` cargo feature (never in a
//! release build: no setting can turn it on there), every boundary inside a step (before and
//! after each Secrets Manager call, each connection and each database statement) is a named
//! point, `<step>/<boundary>#<n>` with `n` counting that boundary within the invocation. The
//! process kills itself with SIGKILL when it reaches the point named by `PGROTATE_CRASH_AT`,
//! and appends every point it passes to the file named by `PGROTATE_CRASH_LOG` (so the tests
//! discover the points instead of listing them by hand). `PGROTATE_PAUSE_AT` names a point
//! where the process instead writes the file `PGROTATE_PAUSE_FILE` and waits until that file
//! is removed (at most a minute). Without the feature, every call here compiles to nothing.

#[cfg(feature = "crash-points")]
mod enabled {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Mutex;

    struct State {
        step: String,
        seen: HashMap<String, usize>,
    }

    static STATE: Mutex<Option<State>> = Mutex::new(None);

    pub fn enter_step(step: &str) {
        if let Ok(mut state) = STATE.lock() {
            *state = Some(State {
                step: step.to_string(),
                seen: HashMap::new(),
            });
        }
    }

    pub fn point(boundary: &str) {
        let name = {
            let Ok(mut state) = STATE.lock() else { return };
            let Some(state) = state.as_mut() else { return };
            let n = state.seen.entry(boundary.to_string()).or_insert(0);
            *n += 1;
            format!("{}/{boundary}#{n}", state.step)
        };
        if let Some(path) = std::env::var_os("PGROTATE_CRASH_LOG")
            && let Ok(mut log) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(log, "{name}");
        }
        // A pause instead of a crash: the tests do something to a dependency (restart the
        // database, say) while the step waits here, then remove the file to let it go on.
        if std::env::var("PGROTATE_PAUSE_AT").is_ok_and(|at| at == name)
            && let Some(file) = std::env::var_os("PGROTATE_PAUSE_FILE")
        {
            let _ = std::fs::write(&file, &name);
            let started = std::time::Instant::now();
            while std::path::Path::new(&file).exists()
                && started.elapsed() < std::time::Duration::from_secs(60)
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if std::env::var("PGROTATE_CRASH_AT").is_ok_and(|at| at == name) {
            eprintln!("pgrotate: crash point {name} reached: SIGKILL");
            // SIGKILL, as when Lambda or the host kills the process: no destructor, no
            // flush, no error returned. `kill` avoids unsafe code.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

#[cfg(feature = "crash-points")]
pub use enabled::{enter_step, point};

/// Starts counting the boundaries of a new invocation's step.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn enter_step(_step: &str) {}

/// A boundary inside a step.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_boundary: &str) {}
