//! `queue health`: the original plan's alert thresholds, as an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::Secrets;
use crate::output::{bytes, printable, Out};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alert when Redis uses more than this share of maxmemory, % [default: 80]
    #[arg(long)]
    max_memory_pct: Option<f64>,
    /// Alert when a queue has more pending jobs than this [default: 500]
    #[arg(long)]
    max_backlog: Option<u64>,
    /// Alert when more than this share of attempts failed in the last hour, % [default: 5]
    #[arg(long)]
    max_failure_pct: Option<f64>,
    /// Alert when a queue's oldest pending job has waited longer than this [default: 5m]
    #[arg(long, value_parser = crate::output::parse_duration)]
    max_wait: Option<std::time::Duration>,
    /// TOML file with any of: max_memory_pct, max_backlog, max_failure_pct, max_wait (a
    /// duration such as "5m"; flags win)
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    max_memory_pct: Option<f64>,
    max_backlog: Option<u64>,
    max_failure_pct: Option<f64>,
    max_wait: Option<String>,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

/// The exit code when health could not be checked at all (a wrong config file or URL): not
/// the 1 of a breached threshold, so a probe tells a broken probe from a sick queue.
const CANNOT_CHECK: u8 = 3;

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    let checked = match limits(&a) {
        Ok(limits) => check(g, out, limits).await,
        Err(e) => Err(e.context(ConfigMistake)),
    };
    match checked {
        Err(e) if is_config(&e) => {
            crate::error::report(&e, out, &Secrets::new(g.redis_url.as_deref()));
            Ok(ExitCode::from(CANNOT_CHECK))
        }
        other => other,
    }
}

/// Marks an error in the thresholds health was given (its config file).
#[derive(Debug)]
struct ConfigMistake;

impl std::fmt::Display for ConfigMistake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("health cannot check with this configuration")
    }
}

/// Whether `e` is a mistake in what health was given (its config file, the URL), not an
/// answer about the queue.
fn is_config(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigMistake>().is_some()
        || e.chain().any(|c| {
            c.downcast_ref::<queue::Error>()
                .is_some_and(|e| matches!(e, queue::Error::Config(_)))
        })
}

/// The thresholds: flags, then the config file, then the defaults.
struct Limits {
    max_mem: f64,
    max_backlog: u64,
    max_fail: f64,
    max_wait: std::time::Duration,
}

fn limits(a: &Args) -> anyhow::Result<Limits> {
    let file = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("invalid health config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let max_mem = a.max_memory_pct.or(file.max_memory_pct).unwrap_or(80.0);
    let max_backlog = a.max_backlog.or(file.max_backlog).unwrap_or(500);
    let max_fail = a.max_failure_pct.or(file.max_failure_pct).unwrap_or(5.0);
    let max_wait = match (a.max_wait, file.max_wait.as_deref()) {
        (Some(w), _) => w,
        (None, Some(w)) => {
            crate::output::parse_duration(w).context("max_wait in the config file")?
        }
        (None, None) => std::time::Duration::from_secs(300),
    };
    Ok(Limits {
        max_mem,
        max_backlog,
        max_fail,
        max_wait,
    })
}

async fn check(g: &Global, out: Out, limits: Limits) -> anyhow::Result<ExitCode> {
    let Limits {
        max_mem,
        max_backlog,
        max_fail,
        max_wait,
    } = limits;

    let mut checks = Vec::new();
    let admin = match g.connect_allowing_eviction().await {
        Ok(a) => a,
        Err(e) if is_config(&e) => return Err(e),
        Err(e) => {
            checks.push(Check {
                check: "redis reachable".into(),
                ok: false,
                // The library's message ends with its cause already: `{e:#}` would repeat it.
                detail: Secrets::new(g.redis_url.as_deref()).scrub(&e.to_string()),
            });
            return finish(&out, &checks);
        }
    };
    checks.push(Check {
        check: "redis reachable".into(),
        ok: true,
        detail: queue::admin::redact(&g.url()),
    });
    let server = admin.server().await?;
    if server.maxmemory > 0 {
        let pct = server.used_memory as f64 * 100.0 / server.maxmemory as f64;
        checks.push(Check {
            check: "memory".into(),
            ok: pct <= max_mem,
            detail: format!(
                "{} of {} ({pct:.1}%, limit {max_mem}%)",
                bytes(server.used_memory),
                bytes(server.maxmemory)
            ),
        });
    } else {
        checks.push(Check {
            check: "memory".into(),
            ok: true,
            detail: format!("{} used, no maxmemory set", bytes(server.used_memory)),
        });
    }
    // Only `noeviction` guarantees Redis never drops a job; `volatile-*` policies evict keys
    // with a TTL only (idempotency keys), `allkeys-*` can evict whole queues.
    // Without maxmemory, no policy ever evicts.
    let policy = server.maxmemory_policy.as_str();
    checks.push(Check {
        check: "eviction policy".into(),
        ok: server.maxmemory == 0 || !policy.starts_with("allkeys"),
        detail: match policy {
            "noeviction" => "noeviction: Redis refuses writes rather than drop jobs".into(),
            p if server.maxmemory == 0 => format!("{p}, but no maxmemory: nothing is evicted"),
            p if p.starts_with("allkeys") => {
                format!("{p} can evict queued jobs; set maxmemory-policy noeviction")
            }
            p => format!("{p} can evict idempotency keys (not jobs); noeviction is safest"),
        },
    });
    let now = chrono::Utc::now().timestamp_millis();
    let workers = admin.workers().await?;
    let dead: Vec<&str> = workers
        .iter()
        .filter(|w| !w.alive(now))
        .map(|w| w.id.as_str())
        .collect();
    checks.push(Check {
        check: "workers".into(),
        ok: dead.is_empty(),
        detail: if dead.is_empty() {
            format!("{} alive", workers.len())
        } else {
            format!(
                "{} of {} stopped beating without leaving (crashed or cut off): {}; their records go after an hour",
                dead.len(),
                workers.len(),
                dead.join(", ")
            )
        },
    });
    for q in admin.queues().await? {
        let s = admin.stats(&q).await?;
        checks.push(Check {
            check: format!("backlog {q}"),
            ok: s.pending <= max_backlog,
            detail: format!("{} pending (limit {max_backlog})", s.pending),
        });
        if s.paused {
            checks.push(Check {
                check: format!("paused {q}"),
                ok: s.pending == 0,
                detail: format!(
                    "paused with {} pending: nothing runs until `queue queue resume`",
                    s.pending
                ),
            });
        }
        let waited = s.oldest_pending_ms.unwrap_or(0).max(0) as u64;
        checks.push(Check {
            check: format!("wait {q}"),
            ok: waited <= max_wait.as_millis() as u64,
            detail: format!(
                "the oldest pending job has waited {} (limit {})",
                crate::output::human(waited),
                crate::output::human(max_wait.as_millis() as u64)
            ),
        });
        let attempts = s.processed_1h + s.failed_1h;
        checks.push(Check {
            check: format!("failure rate {q}"),
            ok: s.error_rate_1h * 100.0 <= max_fail,
            detail: format!(
                "{:.1}% of {attempts} attempts in the last hour failed (limit {max_fail}%)",
                s.error_rate_1h * 100.0
            ),
        });
    }
    finish(&out, &checks)
}

fn finish(out: &Out, checks: &[Check]) -> anyhow::Result<ExitCode> {
    let healthy = checks.iter().all(|c| c.ok);
    if out.json {
        out.json(&serde_json::json!({ "healthy": healthy, "checks": checks }))?;
    } else {
        for c in checks {
            let mark = if c.ok {
                out.green("ok  ")
            } else {
                out.red("FAIL")
            };
            out.line(&format!(
                "{mark} {:<24} {}",
                printable(&c.check),
                printable(&c.detail)
            ))?;
        }
        out.line(&if healthy {
            out.green("healthy")
        } else {
            out.red("unhealthy")
        })?;
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
