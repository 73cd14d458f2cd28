//! Events: a typed pub/sub bus for application and system events, and the lifecycle log of a
//! queue's jobs.
//!
//! The bus is Redis pub/sub: fast, and lossy while a subscriber is disconnected. Subscribers
//! reconnect by themselves and log it. Lifecycle events (enqueued, started, completed, failed,
//! retrying, dead, discarded, deduplicated), when a queue has them on, are also written to a
//! capped stream per queue; every entry has a sequence number, so a consumer that was away
//! catches up from the stream and sees exactly how many events it missed.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::engine::client::Client;
use crate::engine::codec::{decode_value, encode_value};
use crate::error::{Error, Result};

/// An event received from the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    /// The channel it was published on (without the namespace prefix).
    pub channel: String,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: i64,
    /// The payload.
    pub payload: T,
}

#[derive(Serialize, Deserialize)]
struct Wire<T> {
    at: i64,
    p: T,
}

/// A live subscription: a stream of events (or of errors decoding one). Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription<T> {
    rx: mpsc::Receiver<Result<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish and subscribe to typed events (MessagePack) on `<namespace>:events:<channel>`.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
}

impl EventBus {
    /// The bus of `client`'s namespace.
    pub fn new(client: Client) -> EventBus {
        EventBus { client }
    }

    fn keys(&self) -> crate::keys::NamespaceKeys {
        crate::keys::NamespaceKeys::of_valid(&self.client.config().namespace)
    }

    /// Publishes `payload` on `channel`; returns how many subscribers received it.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have published.
    pub async fn publish<T: Serialize>(&self, channel: &str, payload: &T) -> Result<u64> {
        let at = chrono::Utc::now().timestamp_millis();
        let bytes = encode_value(&Wire { at, p: payload }, "event")?;
        redis::cmd("PUBLISH")
            .arg(self.keys().event_channel(channel))
            .arg(bytes)
            .query_async(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))
    }

    /// Subscribes to the channels matching `pattern` (Redis glob: `orders.*`). Returns once the
    /// subscription is active, so nothing published after this call returns is missed while
    /// connected. After a disconnection (a Redis restart) it reconnects by itself with backoff
    /// and says so in the log; events published meanwhile are lost (use the lifecycle stream
    /// where that matters).
    ///
    /// A pattern without glob characters is subscribed as an exact channel (`SUBSCRIBE`), one
    /// with them as a pattern (`PSUBSCRIBE`). The difference shows under ACLs: Redis checks a
    /// pattern against the user's channel rules literally, so subscribing to `orders.*` needs
    /// `&<namespace>:events:orders.*` where an exact channel is covered by `&<namespace>:*`.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] if the first connection fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn subscribe<T: DeserializeOwned + Send + 'static>(
        &self,
        pattern: &str,
    ) -> Result<Subscription<Event<T>>> {
        let prefix = self.keys().event_channel("");
        let topic = if pattern.contains(['*', '?', '[', '\\']) {
            Topic::Pattern(self.keys().event_pattern(pattern))
        } else {
            Topic::Channel(self.keys().event_channel(pattern))
        };
        let decode = move |channel: String, bytes: &[u8]| -> Result<Event<T>> {
            let w: Wire<T> = decode_value(bytes, "event")?;
            Ok(Event {
                channel: channel
                    .strip_prefix(&prefix)
                    .unwrap_or(&channel)
                    .to_string(),
                at_ms: w.at,
                payload: w.p,
            })
        };
        subscribe_raw(&self.client, topic, decode).await
    }
}

/// What a subscription listens to. A name without glob characters is one channel, taken with
/// SUBSCRIBE: an ACL's `&<namespace>:*` covers it, while Redis checks a PSUBSCRIBE pattern
/// against the user's channel rules literally (the rule must be that very pattern).
enum Topic {
    Channel(String),
    Pattern(String),
}

impl Topic {
    fn name(&self) -> &str {
        match self {
            Topic::Channel(c) | Topic::Pattern(c) => c,
        }
    }
}

/// Runs a subscription in a background task that reconnects on its own.
async fn subscribe_raw<T: Send + 'static>(
    client: &Client,
    topic: Topic,
    decode: impl Fn(String, &[u8]) -> Result<T> + Send + 'static,
) -> Result<Subscription<T>> {
    let (tx, rx) = mpsc::channel(1024);
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    // The client itself: its TLS settings, and behind Sentinels the current primary.
    let owner = client.clone();
    let url = crate::error::redact(client.url());
    let task = tokio::spawn(async move {
        let pattern = topic.name().to_string();
        let mut ready = Some(ready_tx);
        let mut lost_at: Option<std::time::Instant> = None;
        let mut delay = Duration::from_millis(50);
        loop {
            let connected = async {
                let (mut ps, epoch) = owner.pubsub_in_epoch().await?;
                let subscribed = match &topic {
                    Topic::Channel(c) => ps.subscribe(c).await,
                    Topic::Pattern(p) => ps.psubscribe(p).await,
                };
                subscribed.map_err(|e| {
                    owner.observe_failure(epoch, &e);
                    Error::from_redis(&url, "subscribe", e)
                })?;
                Ok::<_, Error>((ps, epoch))
            }
            .await;
            let (mut ps, epoch) = match connected {
                Ok(ps) => ps,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    tracing::warn!(%pattern, error = %e, "event subscription: reconnect failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            delay = Duration::from_millis(50);
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            if let Some(t) = lost_at.take() {
                tracing::info!(%pattern, down_ms = t.elapsed().as_millis() as u64, "event subscription restored; events published meanwhile were missed");
            }
            let mut messages = ps.on_message();
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => msg,
                    // Behind Sentinels, the primary moved: events are published there now.
                    () = owner.moved(epoch) => None,
                };
                let Some(msg) = msg else { break };
                let channel: String = msg.get_channel_name().to_string();
                if tx
                    .send(decode(channel, msg.get_payload_bytes()))
                    .await
                    .is_err()
                {
                    return; // The subscription was dropped.
                }
            }
            tracing::warn!(%pattern, "event subscription lost (Redis restarted or the connection dropped); reconnecting");
            lost_at = Some(std::time::Instant::now());
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(Subscription { rx, task }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::unreachable(client.url(), "subscription task ended")),
    }
}

/// Entries of a stream as XRANGE/XREAD return them: (entry id, fields).
type Entries = Vec<(String, HashMap<String, String>)>;

/// One lifecycle event: what happened to which jobs of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// The stream entry id (empty for events received over pub/sub).
    #[serde(default)]
    pub entry: String,
    /// `enqueued`, `deduplicated`, `started`, `completed`, `failed`, `retrying`, `dead`,
    /// `discarded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When, ms since the Unix epoch (Redis clock).
    pub at: i64,
    /// Sequence number in the queue's event log (gapless when nothing was missed).
    pub seq: u64,
    /// The jobs.
    pub ids: Vec<String>,
    /// The error, for `failed`, `dead` and `discarded`.
    #[serde(default)]
    pub error: Option<String>,
}

/// Events a consumer did not see: sequence numbers `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// First missed sequence number.
    pub from: u64,
    /// Last missed sequence number.
    pub to: u64,
}

impl Gap {
    /// How many events were missed.
    pub fn len(&self) -> u64 {
        self.to + 1 - self.from
    }
    /// Never true (a gap misses at least one event); present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Finds gaps in a run of events after `last_seen` (the last sequence number the consumer saw).
pub fn gaps(last_seen: Option<u64>, events: &[LifecycleEvent]) -> Vec<Gap> {
    let mut out = Vec::new();
    let mut prev = last_seen;
    for e in events {
        if let Some(p) = prev {
            if e.seq > p + 1 {
                out.push(Gap {
                    from: p + 1,
                    to: e.seq - 1,
                });
            }
        }
        prev = Some(e.seq);
    }
    out
}

/// A queue's lifecycle events: turn them on, read the log, follow it, subscribe.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    client: Client,
}

impl Lifecycle {
    /// Lifecycle events through `client`.
    pub fn new(client: Client) -> Lifecycle {
        Lifecycle { client }
    }

    /// Turns a queue's lifecycle events on or off (off by default: they cost one stream write
    /// and one publish per script call). For a split queue, on the queue and every shard: each
    /// keeps its own log (read a shard's by its name, `Enqueued::queue`).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn set_enabled(&self, queue: &str, on: bool) -> Result<()> {
        for part in self.client.shards_of(queue).await? {
            self.set_enabled_part(&part, on).await?;
        }
        Ok(())
    }

    async fn set_enabled_part(&self, queue: &str, on: bool) -> Result<()> {
        let k = self.client.keys(queue)?;
        let mut cmd = if on {
            redis::cmd("HSET")
        } else {
            redis::cmd("HDEL")
        };
        cmd.arg(k.meta()).arg("events");
        if on {
            cmd.arg(1);
        }
        cmd.query_async::<()>(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))
    }

    /// Events with a sequence number above `after_seq` (all kept ones when `None`), oldest first,
    /// at most `count`. Compare with [`gaps`] to see what was missed.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn read(
        &self,
        queue: &str,
        after_entry: Option<&str>,
        count: usize,
    ) -> Result<Vec<LifecycleEvent>> {
        let k = self.client.keys(queue)?;
        let start = after_entry
            .map(|e| format!("({e}"))
            .unwrap_or_else(|| "-".into());
        let entries: Entries = redis::cmd("XRANGE")
            .arg(k.events())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))?;
        Ok(entries.into_iter().map(|(id, f)| entry(id, f)).collect())
    }

    /// The last `count` events, oldest first.
    ///
    /// # Errors
    ///
    /// As [`Lifecycle::read`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn tail(&self, queue: &str, count: usize) -> Result<Vec<LifecycleEvent>> {
        let k = self.client.keys(queue)?;
        let entries: Entries = redis::cmd("XREVRANGE")
            .arg(k.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.client.con())
            .await
            .map_err(Error::redis(self.client.url()))?;
        let mut out: Vec<LifecycleEvent> =
            entries.into_iter().map(|(id, f)| entry(id, f)).collect();
        out.reverse();
        Ok(out)
    }

    /// Waits up to `block` for events after stream entry `after` (`$` for only new ones) on a
    /// connection of its own, so a blocked read holds up nothing else.
    ///
    /// # Errors
    ///
    /// As [`Lifecycle::read`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only; the blocked read ends with its connection).
    pub async fn follow(
        &self,
        queue: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<LifecycleEvent>> {
        let k = self.client.keys(queue)?;
        let (mut con, epoch) = self
            .client
            .dedicated(Some(block + Duration::from_secs(5)))
            .await?;
        let reply: Option<Vec<(String, Entries)>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(k.events())
            .arg(after)
            .query_async(&mut con)
            .await
            .map_err(|e| {
                self.client.observe_failure(epoch, &e);
                Error::redis(self.client.url())(e)
            })?;
        Ok(reply
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(|(id, f)| entry(id, f))
            .collect())
    }

    /// Lifecycle events of a queue as they happen (pub/sub: lossy while disconnected; the
    /// sequence numbers show what was missed).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn subscribe(&self, queue: &str) -> Result<Subscription<LifecycleEvent>> {
        let channel = self.client.keys(queue)?.events();
        subscribe_raw(&self.client, Topic::Channel(channel), |_, bytes| {
            decode_value::<LifecycleEvent>(bytes, "lifecycle event")
        })
        .await
    }
}

fn entry(id: String, f: HashMap<String, String>) -> LifecycleEvent {
    LifecycleEvent {
        entry: id,
        kind: f.get("type").cloned().unwrap_or_default(),
        at: f.get("at").and_then(|v| v.parse().ok()).unwrap_or(0),
        seq: f.get("seq").and_then(|v| v.parse().ok()).unwrap_or(0),
        ids: f
            .get("ids")
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        error: f.get("error").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> LifecycleEvent {
        LifecycleEvent {
            entry: String::new(),
            kind: "completed".into(),
            at: 0,
            seq,
            ids: vec![],
            error: None,
        }
    }

    #[test]
    fn gaps_are_found_between_and_before_events() {
        assert!(gaps(Some(3), &[ev(4), ev(5)]).is_empty());
        assert_eq!(
            gaps(Some(3), &[ev(7), ev(8), ev(10)]),
            vec![Gap { from: 4, to: 6 }, Gap { from: 9, to: 9 }]
        );
        assert_eq!(gaps(None, &[ev(7), ev(8)]), vec![]);
        assert_eq!(Gap { from: 4, to: 6 }.len(), 3);
    }
}
