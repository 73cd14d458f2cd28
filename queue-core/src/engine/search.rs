//! Finding jobs by what they carry, and changing many at once: the operator's searches (the
//! dashboard's job search, `queue jobs --name`) and bulk retries and deletes.
//!
//! A search reads a state's sorted set in order, a chunk at a time, and decodes each envelope:
//! its cost grows with the entries it reads, not with the matches. It reads at most
//! [`SEARCH_BUDGET`] entries a call and says where it stopped ([`SearchPage::next`]), so a
//! search over a million dead jobs answers in bounded time and is continued page by page.

use serde_json::Value;

use crate::engine::admin::{Admin, JobView, State};
use crate::error::{Error, Result};
use crate::wire::MAX_BATCH;

/// The most entries one [`Admin::search`] call reads.
pub const SEARCH_BUDGET: usize = 5_000;

/// Entries read per round trip.
const CHUNK: usize = 500;

/// What a search looks for: a job name, and a match over the decoded arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    name: Option<String>,
    matcher: Matcher,
}

#[derive(Debug, Clone, Default, PartialEq)]
enum Matcher {
    #[default]
    Any,
    /// Lower-case text found in the arguments' compact JSON, lower-cased.
    Text(String),
    /// The value at a path equals this one.
    Path(Vec<Step>, Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Query {
    /// Every job.
    pub fn all() -> Query {
        Query::default()
    }

    /// Only jobs named `name` (exactly).
    pub fn name(mut self, name: impl Into<String>) -> Query {
        let name = name.into();
        self.name = (!name.is_empty()).then_some(name);
        self
    }

    /// Only jobs whose arguments match `text`:
    ///
    /// - `$.path = value` (`$.user.id = 42`, `$.items[0].sku = "A-1"`): the value at the path
    ///   of the arguments decoded to JSON equals `value`, read as JSON (`42`, `"x"`, `true`,
    ///   `null`) or, when it is not JSON, as a string;
    /// - anything else: a substring of the arguments as compact JSON, ignoring case
    ///   (`alice@example.com`, `"order_id":17`).
    ///
    /// An empty `text` matches every job.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed path (`$.a[x]`, `$.` alone, no `=`).
    pub fn matching(mut self, text: &str) -> Result<Query> {
        let text = text.trim();
        self.matcher = if text.is_empty() {
            Matcher::Any
        } else if let Some(rest) = text.strip_prefix('$') {
            let (path, value) = rest.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "a JSON-path search is `$.path = value`, not {text:?}"
                ))
            })?;
            let value = value.trim();
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
            Matcher::Path(parse_path(path.trim())?, value)
        } else {
            Matcher::Text(text.to_lowercase())
        };
        Ok(self)
    }

    /// Whether it matches every job.
    pub fn is_all(&self) -> bool {
        self.name.is_none() && self.matcher == Matcher::Any
    }

    /// Whether `view` matches. An envelope that does not decode matches only a search for
    /// every job; arguments that do not decode match no argument search.
    pub fn matches(&self, view: &JobView) -> bool {
        if self.is_all() {
            return true;
        }
        let Ok(job) = &view.job else { return false };
        if self.name.as_ref().is_some_and(|n| *n != job.name) {
            return false;
        }
        if self.matcher == Matcher::Any {
            return true;
        }
        let Ok(args) = crate::wire::decode_value::<Value>(&job.args, "arguments") else {
            return false;
        };
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Text(t) => args.to_string().to_lowercase().contains(t.as_str()),
            Matcher::Path(path, want) => lookup(&args, path) == Some(want),
        }
    }
}

/// `.a.b[0]["c d"]` after the `$`.
fn parse_path(mut p: &str) -> Result<Vec<Step>> {
    let whole = p;
    let bad = |why: &str| Error::Config(format!("JSON path ${whole}: {why}"));
    let mut steps = Vec::new();
    while !p.is_empty() {
        if let Some(rest) = p.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return Err(bad("a key is missing after `.`"));
            }
            steps.push(Step::Key(rest[..end].to_string()));
            p = &rest[end..];
        } else if let Some(rest) = p.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(|| bad("`[` is not closed"))?;
            let inner = rest[..end].trim();
            steps.push(match inner.parse::<usize>() {
                Ok(i) => Step::Index(i),
                Err(_) => match serde_json::from_str::<String>(inner) {
                    Ok(k) => Step::Key(k),
                    Err(_) => return Err(bad("an index is a number or a quoted key")),
                },
            });
            p = &rest[end + 1..];
        } else {
            return Err(bad("expected `.key` or `[index]`"));
        }
    }
    if steps.is_empty() {
        return Err(Error::Config(format!(
            "JSON path ${whole}: name at least one key, as in $.user.id"
        )));
    }
    Ok(steps)
}

fn lookup<'v>(mut v: &'v Value, path: &[Step]) -> Option<&'v Value> {
    for s in path {
        v = match s {
            Step::Key(k) => v.get(k)?,
            Step::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

/// A page of a search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The matches, in the state's order.
    pub jobs: Vec<JobView>,
    /// Where this call started reading (an offset in the state's order).
    pub from: usize,
    /// How many entries it read.
    pub scanned: usize,
    /// Where the next page starts reading; `None` when the state's end was reached.
    pub next: Option<usize>,
}

/// What a bulk change does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bulk {
    /// Runs it again now ([`Admin::retry`]).
    Retry,
    /// Deletes it ([`Admin::delete`]).
    Delete,
}

impl Admin {
    /// Up to `limit` jobs of `queue` in `state` matching `query`, reading from offset `from`
    /// in the state's order and at most [`SEARCH_BUDGET`] entries (continue from
    /// [`SearchPage::next`]). A search for every job reads just the page.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn search(
        &self,
        queue: &str,
        state: State,
        query: &Query,
        from: usize,
        limit: usize,
    ) -> Result<SearchPage> {
        let mut page = SearchPage {
            jobs: Vec::new(),
            from,
            scanned: 0,
            next: None,
        };
        if query.is_all() {
            page.jobs = self.list(queue, state, from, limit).await?;
            page.scanned = page.jobs.len();
            page.next = (page.jobs.len() == limit)
                .then(|| from.checked_add(limit))
                .flatten();
            return Ok(page);
        }
        let mut offset = from;
        while page.jobs.len() < limit && page.scanned < SEARCH_BUDGET {
            let want = CHUNK.min(SEARCH_BUDGET - page.scanned);
            let chunk = self.list(queue, state, offset, want).await?;
            let read = chunk.len();
            let mut taken = 0;
            for v in chunk {
                offset += 1;
                page.scanned += 1;
                taken += 1;
                if query.matches(&v) {
                    page.jobs.push(v);
                    if page.jobs.len() == limit {
                        break;
                    }
                }
            }
            if read < want && taken == read {
                // The state's end, every entry of it read.
                return Ok(page);
            }
        }
        page.next = Some(offset);
        Ok(page)
    }

    /// Retries or deletes the jobs of `queue` in `state` matching `query`, a batch at a time,
    /// at most `max` of them, calling `progress` with each batch's count; returns how many
    /// changed and whether it reached the end.
    ///
    /// It works through what the state held when it started: it reads at most as many entries
    /// as the state counted then, and skips entries that arrived since (a retried job that
    /// fails again and comes back dead is not retried twice in one call). Jobs that changed
    /// state meanwhile are skipped. Running (active) jobs cannot be changed; only dead,
    /// scheduled, retrying and recovered jobs can be retried.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for a state the change does not apply to; [`Error::Unreachable`],
    /// [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call leaves the batches done so far done.
    pub async fn apply_all(
        &self,
        queue: &str,
        state: State,
        query: &Query,
        bulk: Bulk,
        max: u64,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<BulkDone> {
        // A split queue: each of its parts in turn.
        let mut total = BulkDone {
            changed: 0,
            finished: true,
        };
        for part in self.client().shards_of(queue).await? {
            let done = self
                .apply_part(
                    &part,
                    state,
                    query,
                    bulk,
                    max - total.changed,
                    &mut progress,
                )
                .await?;
            total.changed += done.changed;
            total.finished &= done.finished;
            if total.changed >= max {
                break;
            }
        }
        Ok(total)
    }

    /// [`Admin::apply_all`] in one queue or shard.
    async fn apply_part(
        &self,
        queue: &str,
        state: State,
        query: &Query,
        bulk: Bulk,
        max: u64,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<BulkDone> {
        if state == State::Active {
            return Err(Error::InvalidJob(
                "running (active) jobs cannot be changed: they finish, or are recovered when their lease expires".into(),
            ));
        }
        if bulk == Bulk::Retry
            && !matches!(
                state,
                State::Dead | State::Scheduled | State::Retrying | State::Recovered
            )
        {
            return Err(Error::InvalidJob(
                "only dead, scheduled, retrying and recovered jobs can be retried".into(),
            ));
        }
        let started_ms = crate::engine::client::now_ms();
        let at_start = self.count_part(queue, state).await?;
        let mut done = BulkDone::default();
        if bulk == Bulk::Delete && query.is_all() {
            while done.changed < max.min(at_start) {
                let n = self
                    .purge_part(
                        queue,
                        state,
                        MAX_BATCH.min((max.min(at_start) - done.changed) as usize),
                    )
                    .await?;
                if n == 0 {
                    break;
                }
                done.changed += n;
                progress(n);
            }
            done.finished = done.changed >= at_start || self.count_part(queue, state).await? == 0;
            return Ok(done);
        }
        // From the front in batches: changed jobs leave the set, so the front holds the next
        // ones; the ones that do not match, did not move, or arrived after the start are
        // stepped past.
        let mut offset = 0usize;
        let mut read = 0u64;
        while read < at_start && done.changed < max {
            let want = MAX_BATCH.min((at_start - read) as usize);
            let views = self.list_of(queue, state, offset, want).await?;
            if views.is_empty() {
                break;
            }
            read += views.len() as u64;
            let room = (max - done.changed) as usize;
            let mut take = Vec::new();
            for v in views {
                // Dead and completed jobs carry their finish time: a newer one arrived since.
                let newer = matches!(state, State::Dead | State::Completed)
                    && v.at_ms.is_some_and(|at| at > started_ms);
                if !newer && take.len() < room && query.matches(&v) {
                    take.push(v);
                } else {
                    offset += 1;
                }
            }
            if take.is_empty() {
                continue;
            }
            let n = match bulk {
                Bulk::Retry => self.retry(&take).await?,
                Bulk::Delete => self.delete(&take).await?,
            };
            // Those that did not move (changed state meanwhile) are still in front.
            offset += take.len() - n as usize;
            done.changed += n;
            progress(n);
        }
        done.finished = read >= at_start || done.changed < max;
        Ok(done)
    }

    /// How many jobs `queue` holds in `state`.
    /// How many jobs one queue or shard holds in `state`.
    async fn count_part(&self, queue: &str, state: State) -> Result<u64> {
        Ok(self.stats_of(queue).await?.count(state))
    }
}

/// What [`Admin::apply_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkDone {
    /// Jobs retried or deleted.
    pub changed: u64,
    /// Whether it went through everything the state held at the start (false: it stopped at
    /// `max`; call again for the rest).
    pub finished: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_look_up() {
        let v: Value = serde_json::json!({"user": {"id": 42, "tags": ["a", "b"]}, "k y": 1});
        let q = |s: &str| match Query::all().matching(s).expect("parses").matcher {
            Matcher::Path(p, want) => lookup(&v, &p) == Some(&want),
            m => panic!("{m:?}"),
        };
        assert!(q("$.user.id = 42"));
        assert!(!q("$.user.id = 43"));
        assert!(q("$.user.tags[1] = b"), "a bare word is a string");
        assert!(q(r#"$.user.tags[0] = "a""#));
        assert!(q(r#"$["k y"] = 1"#));
        assert!(!q("$.nope.deeper = 1"));
        for bad in ["$.", "$.a[x] = 1", "$.a", "$[1 = 2", "$ = 1"] {
            assert!(Query::all().matching(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Query::all().matching("Alice").expect("text").matcher,
            Matcher::Text("alice".into())
        );
        assert!(Query::all().matching("  ").expect("empty").is_all());
    }
}
