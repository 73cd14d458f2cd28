//! The handlers this worker runs: every `#[job]` linked into the binary.

use std::collections::HashMap;

use queue_core::__private::JobRegistration;

use crate::error::{Error, Result};

/// Handlers by job name, validated at start-up.
#[derive(Debug, Clone)]
pub struct Registry {
    jobs: HashMap<&'static str, &'static JobRegistration>,
}

impl Registry {
    /// Every handler linked into the binary.
    ///
    /// # Errors
    ///
    /// [`Error::Registry`] when two handlers share a name (both places are named) or when no
    /// handler is linked at all (a worker that can run nothing is a deployment mistake).
    pub fn discover() -> Result<Registry> {
        let jobs = queue_core::__private::registered_jobs().map_err(registry_error)?;
        if jobs.is_empty() {
            return Err(Error::Registry(
                "no #[job] handlers are linked into this binary: declare at least one with #[job] \
                 (in a library, make sure the binary references the crate so its handlers are linked)"
                    .into(),
            ));
        }
        Ok(Registry { jobs })
    }

    /// Only the handlers named in `names`, out of every `#[job]` linked into the binary.
    ///
    /// # Errors
    ///
    /// [`Error::Registry`] when a name has no handler, when two linked handlers share one of
    /// these names, or when `names` is empty.
    pub fn with_jobs(names: &[&str]) -> Result<Registry> {
        let chosen = queue_core::__private::linked_jobs().filter(|r| names.contains(&r.name));
        let jobs = queue_core::__private::registered(chosen).map_err(registry_error)?;
        let mut missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !jobs.contains_key(n))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(Error::Registry(format!(
                "no #[job] handler is named {}",
                missing
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if jobs.is_empty() {
            return Err(Error::Registry(
                "a worker needs at least one #[job] handler".into(),
            ));
        }
        Ok(Registry { jobs })
    }

    /// The handler for `name`.
    pub fn get(&self, name: &str) -> Option<&'static JobRegistration> {
        self.jobs.get(name).copied()
    }

    /// Known job names, sorted (for error messages).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.jobs.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Schedules declared with `#[job(cron = "...")]`.
    ///
    /// # Errors
    ///
    /// [`Error::Registry`] listing every job whose expression or zone is invalid.
    pub fn schedules(&self) -> Result<Vec<queue_core::cron::Schedule>> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for reg in self.jobs.values() {
            if let Some(make) = reg.schedule {
                match make() {
                    Ok(s) => out.push(s),
                    Err(e) => bad.push(format!("{} ({}): {e}", reg.name, reg.location)),
                }
            }
        }
        if !bad.is_empty() {
            bad.sort();
            return Err(Error::Registry(format!(
                "invalid schedules: {}",
                bad.join("; ")
            )));
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    /// Result caches declared with `#[job(cache_ttl = ...)]`: (job, TTL in ms).
    pub fn cache_ttls(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .jobs
            .values()
            .filter_map(|r| r.cache_ttl_ms.map(|t| (r.name, t)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Rate limits declared with `#[job(rate_limit = ...)]`: (job, limit, key).
    pub fn rate_limits(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut v: Vec<_> = self
            .jobs
            .values()
            .filter_map(|r| r.rate_limit.map(|(l, k)| (r.name, l, k)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Queues named by the handlers' `#[job(queue = ...)]` defaults, plus `default`.
    pub fn queues(&self) -> Vec<String> {
        let mut qs: Vec<String> = self
            .jobs
            .values()
            .map(|r| {
                (r.options)()
                    .queue
                    .unwrap_or_else(|| queue_core::wire::DEFAULT_QUEUE.to_string())
            })
            .collect();
        qs.sort();
        qs.dedup();
        qs
    }
}

/// The engine's registry error as the worker's (one "invalid job registry" prefix, not two).
fn registry_error(e: queue_core::Error) -> Error {
    match e {
        queue_core::Error::Registry(m) => Error::Registry(m),
        other => Error::Core(other),
    }
}
