//! Tracing set-up: text or JSON as Lambda's log format asks, the level from
//! `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`, and dependencies capped at INFO because their
//! DEBUG/TRACE output carries raw events and responses (RotationToken, secret values).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The level asked for: `AWS_LAMBDA_LOG_LEVEL` first, then `RUST_LOG` (a level, or a
/// `pgrotate=<level>` directive in it), else INFO.
pub fn level_from(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    let parse = |raw: &str| -> Option<LevelFilter> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "fatal" => Some(LevelFilter::ERROR),
            other => other.parse::<LevelFilter>().ok(),
        }
    };
    if let Some(level) = lookup("AWS_LAMBDA_LOG_LEVEL").as_deref().and_then(parse) {
        return level;
    }
    if let Some(rust_log) = lookup("RUST_LOG") {
        if let Some(level) = parse(&rust_log) {
            return level;
        }
        for directive in rust_log.split(',') {
            if let Some(level) = directive.trim().strip_prefix("pgrotate=").and_then(parse) {
                return level;
            }
        }
    }
    LevelFilter::INFO
}

/// `pgrotate` at `level`, everything else at `level` but never more verbose than INFO.
/// (A static target filter, not `EnvFilter`: that one brings a regex engine into the binary.)
pub fn filter(level: LevelFilter) -> Targets {
    Targets::new()
        .with_default(level.min(LevelFilter::INFO))
        .with_target("pgrotate", level)
}

/// Installs the global subscriber writing to `writer`.
pub fn init_with<W>(level: LevelFilter, json: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter(level));
    let result = if json {
        registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init()
    } else {
        registry.with(layer.without_time()).try_init()
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}

/// Reads the Lambda logging settings from the environment and installs the subscriber on
/// standard output, where Lambda collects it.
pub fn init_from_env() {
    let lookup = |name: &str| std::env::var(name).ok();
    let json = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    init_with(level_from(lookup), json, std::io::stdout);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(vars: &[(&str, &str)]) -> LevelFilter {
        level_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn lambda_log_level_wins_over_rust_log() {
        assert_eq!(level(&[]), LevelFilter::INFO);
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG"), ("RUST_LOG", "error")]),
            LevelFilter::DEBUG
        );
        assert_eq!(level(&[("RUST_LOG", "trace")]), LevelFilter::TRACE);
        assert_eq!(
            level(&[("RUST_LOG", "hyper=info,pgrotate=debug")]),
            LevelFilter::DEBUG
        );
        assert_eq!(
            level(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]),
            LevelFilter::ERROR
        );
    }

    #[test]
    fn dependencies_never_log_below_info() {
        assert_eq!(
            filter(LevelFilter::TRACE).to_string(),
            "pgrotate=trace,info"
        );
        assert_eq!(filter(LevelFilter::WARN).to_string(), "pgrotate=warn,warn");
    }
}
