//! Sessions in Redis: 256-bit ids from the operating system's random generator, of which Redis
//! stores only a SHA-256 hash; a sliding idle timeout under an absolute one; rotation; per-user
//! listing and "log out everywhere"; writes that never lose a concurrent update (an atomic
//! merge, or a compare-and-set on the version).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::client::Client;
use crate::error::{Error, Result};
use crate::keys::NamespaceKeys;

crate::script::scripts! {
    fn scripts() -> Scripts {
        session_create => ["create.lua"],
        session_get => ["get.lua"],
        session_write => ["write.lua"],
        session_rotate => ["rotate.lua"],
        session_destroy => ["destroy.lua"],
    }
}

/// A session id: the secret a client presents (64 hex characters, 256 bits). Its `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// A new id from the operating system's random generator.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the OS has no random source.
    pub fn generate() -> Result<SessionId> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Config(format!("no OS random source: {e}")))?;
        Ok(SessionId(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    /// A new id whose slot tag is `tag` (four lowercase hex digits, as [`SessionId::tag`]
    /// returns and [`crate::wire::session_tag`] makes): 240 random bits after it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the OS has no random source or `tag` is not four hex digits.
    pub fn generate_in(tag: &str) -> Result<SessionId> {
        if tag.len() != 4 || SessionId::parse(&format!("{tag}{}", "0".repeat(60))).is_none() {
            return Err(Error::Config(format!(
                "a session tag is four lowercase hex digits, not {tag:?}"
            )));
        }
        let random = SessionId::generate()?;
        Ok(SessionId(format!("{tag}{}", &random.0[4..])))
    }

    /// The id's slot tag: its first four hex digits. A user's sessions all have the user's
    /// ([`crate::wire::session_tag`]), so they live in one slot with the user's index.
    pub fn tag(&self) -> &str {
        &self.0[..4]
    }

    /// Accepts a presented id if it has the shape of one (anything else is never looked up).
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| SessionId(s.to_string()))
    }

    /// The id, to hand to the client (a cookie).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What Redis stores in its place.
    pub fn hash(&self) -> String {
        crate::toolkit::sha256_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// The user it belongs to, if any.
    pub user: Option<String>,
    /// When it was created, ms.
    pub created_ms: i64,
    /// When it ends whatever its activity (absolute timeout), ms.
    pub expires_ms: i64,
    /// Incremented by every write; pass it to [`Sessions::update`] to detect concurrent writes.
    pub version: u64,
    /// The data.
    pub data: BTreeMap<String, serde_json::Value>,
}

impl Session {
    /// A data field decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.data
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    fn from_fields(fields: Vec<(String, String)>) -> Result<Session> {
        let mut s = Session {
            user: None,
            created_ms: 0,
            expires_ms: 0,
            version: 0,
            data: BTreeMap::new(),
        };
        for (k, v) in fields {
            match k.as_str() {
                "u" => s.user = (!v.is_empty()).then_some(v),
                "c" => s.created_ms = v.parse().unwrap_or(0),
                "a" => s.expires_ms = v.parse().unwrap_or(0),
                "v" => s.version = v.parse().unwrap_or(0),
                _ => {
                    if let Some(name) = k.strip_prefix("d:") {
                        let value = serde_json::from_str(&v)
                            .map_err(|e| Error::decode("session value", e))?;
                        s.data.insert(name.to_string(), value);
                    }
                }
            }
        }
        Ok(s)
    }
}

/// The outcome of a versioned update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Written; the new version.
    Written(u64),
    /// Someone wrote since the caller read: nothing was written; the current version.
    Conflict(u64),
    /// No live session has this id.
    NotFound,
}

/// A session as listed for its user: never the id, only what identifies it safely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The id's hash (what Redis stores).
    pub hash: String,
    /// When it was created, ms.
    pub created_ms: i64,
    /// Its absolute end, ms.
    pub expires_ms: i64,
}

/// Timeouts of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends (sliding: every read or write restarts it).
    pub idle: Duration,
    /// A session ends this long after creation whatever its use (the plan's 24 h).
    pub absolute: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle: Duration::from_secs(3600),
            absolute: Duration::from_secs(24 * 3600),
        }
    }
}

/// Session storage.
#[derive(Debug, Clone)]
pub struct Sessions {
    client: Client,
    config: SessionConfig,
    keys: NamespaceKeys,
}

fn json_pairs(
    data: impl IntoIterator<Item = (String, serde_json::Value)>,
) -> Result<Vec<(String, String)>> {
    data.into_iter()
        .map(|(k, v)| {
            if k.is_empty() {
                return Err(Error::InvalidJob(
                    "session field names must not be empty".into(),
                ));
            }
            Ok((
                k,
                serde_json::to_string(&v).map_err(|e| Error::encode("session value", e))?,
            ))
        })
        .collect()
}

impl Sessions {
    /// Sessions with the default timeouts (idle 1 h, absolute 24 h).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace.
    pub fn new(client: Client) -> Result<Sessions> {
        Sessions::with_config(client, SessionConfig::default())
    }

    /// Sessions with explicit timeouts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero timeouts or an invalid namespace.
    pub fn with_config(client: Client, config: SessionConfig) -> Result<Sessions> {
        if config.idle.is_zero() || config.absolute.is_zero() {
            return Err(Error::Config("session timeouts must be positive".into()));
        }
        let keys = client.namespace_keys()?;
        Ok(Sessions {
            client,
            config,
            keys,
        })
    }

    fn err(&self) -> impl Fn(redis::RedisError) -> Error + '_ {
        Error::redis(self.client.url())
    }

    /// Creates a session (for `user`, if given) with `data`; returns its id for the client.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Encode`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have created a session nobody holds the id of; it
    /// expires by itself.
    pub async fn create(
        &self,
        user: Option<&str>,
        data: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<(SessionId, Session)> {
        let pairs = json_pairs(data)?;
        // A collision of 256-bit random ids does not happen; the loop only makes it harmless.
        for _ in 0..3 {
            let id = match user {
                Some(u) => SessionId::generate_in(&crate::keys::session_tag(u))?,
                None => SessionId::generate()?,
            };
            let hash = id.hash();
            let key = self.keys.session(id.tag(), &hash);
            let mut call = scripts().session_create.call();
            call.key(key.clone())
                .key(user.map(|u| self.keys.user_sessions(u)).unwrap_or(key));
            call.arg(&hash)
                .arg(self.config.idle.as_millis() as u64)
                .arg(self.config.absolute.as_millis() as u64)
                .arg(user.unwrap_or(""));
            for (k, v) in &pairs {
                call.arg(k.as_str()).arg(v.as_str());
            }
            let created: i64 = call
                .invoke(&mut self.client.con(), self.client.url())
                .await?;
            if created == 1 {
                let session = self
                    .get(id.expose())
                    .await?
                    .ok_or_else(|| Error::Protocol("a created session vanished".into()))?;
                return Ok((id, session));
            }
        }
        Err(Error::Protocol(
            "could not draw an unused session id".into(),
        ))
    }

    /// The live session of a presented id, sliding its idle timeout. An id the server never
    /// issued (or one that expired, rotated away or was destroyed) yields `None`: nothing is
    /// ever adopted from a client.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (the only write is the idle timeout's extension).
    pub async fn get(&self, id: &str) -> Result<Option<Session>> {
        let Some(id) = SessionId::parse(id) else {
            return Ok(None);
        };
        let mut call = scripts().session_get.call();
        call.key(self.keys.session(id.tag(), &id.hash()));
        let fields: Option<Vec<(String, String)>> = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        fields.map(Session::from_fields).transpose()
    }

    /// Merges `set` into the session and removes `remove`, atomically: concurrent merges of
    /// different fields never lose each other's writes. Returns the new version, or `None` when
    /// there is no live session.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Encode`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn merge(
        &self,
        id: &str,
        set: impl IntoIterator<Item = (String, serde_json::Value)>,
        remove: &[&str],
    ) -> Result<Option<u64>> {
        match self.write(id, -1, false, json_pairs(set)?, remove).await? {
            Update::Written(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// Replaces the session's data if its version is still `expected` (read-modify-write
    /// without lost updates: on [`Update::Conflict`], read again and retry).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Encode`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn update(
        &self,
        id: &str,
        expected: u64,
        data: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<Update> {
        self.write(id, expected as i64, true, json_pairs(data)?, &[])
            .await
    }

    async fn write(
        &self,
        id: &str,
        expected: i64,
        replace: bool,
        set: Vec<(String, String)>,
        remove: &[&str],
    ) -> Result<Update> {
        let Some(id) = SessionId::parse(id) else {
            return Ok(Update::NotFound);
        };
        let mut call = scripts().session_write.call();
        call.key(self.keys.session(id.tag(), &id.hash()));
        call.arg(expected)
            .arg(if replace { "1" } else { "0" })
            .arg(remove.len());
        for r in remove {
            call.arg(*r);
        }
        for (k, v) in &set {
            call.arg(k.as_str()).arg(v.as_str());
        }
        let r: Vec<i64> = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        Ok(match r.as_slice() {
            [1, v] => Update::Written(*v as u64),
            [0, v] => Update::Conflict(*v as u64),
            _ => Update::NotFound,
        })
    }

    /// Gives the session a new id (after a login or a privilege change); the old id stops
    /// working at once. Returns the new id, or `None` when there is no live session.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have rotated the session away from the caller.
    pub async fn rotate(&self, id: &str) -> Result<Option<SessionId>> {
        let Some(old) = self.get(id).await?.zip(SessionId::parse(id)) else {
            return Ok(None);
        };
        let (session, old_id) = old;
        let old_key = self.keys.session(old_id.tag(), &old_id.hash());
        for _ in 0..3 {
            // The same tag: the old key, the new one and the user's index share a slot.
            let new_id = SessionId::generate_in(old_id.tag())?;
            let mut call = scripts().session_rotate.call();
            call.key(old_key.clone())
                .key(self.keys.session(new_id.tag(), &new_id.hash()));
            call.key(
                session
                    .user
                    .as_deref()
                    .map(|u| self.keys.user_sessions(u))
                    .unwrap_or_else(|| old_key.clone()),
            );
            call.arg(old_id.hash()).arg(new_id.hash());
            let r: i64 = call
                .invoke(&mut self.client.con(), self.client.url())
                .await?;
            match r {
                1 => return Ok(Some(new_id)),
                0 => return Ok(None),
                _ => continue,
            }
        }
        Err(Error::Protocol(
            "could not draw an unused session id".into(),
        ))
    }

    /// Ends a session. Returns whether one was live.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn destroy(&self, id: &str) -> Result<bool> {
        let Some(id) = SessionId::parse(id) else {
            return Ok(false);
        };
        let hash = id.hash();
        let key = self.keys.session(id.tag(), &hash);
        let user: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("u")
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        let index = user
            .filter(|u| !u.is_empty())
            .map(|u| self.keys.user_sessions(&u))
            .unwrap_or_else(|| key.clone());
        let mut call = scripts().session_destroy.call();
        call.key(index).key(key).arg(&hash);
        let n: i64 = call
            .invoke(&mut self.client.con(), self.client.url())
            .await?;
        Ok(n > 0)
    }

    /// The live sessions of a user.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn list_user(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let hashes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.user_sessions(user))
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let tag = crate::keys::session_tag(user);
        let mut pipe = redis::pipe();
        for h in &hashes {
            pipe.cmd("HMGET")
                .arg(self.keys.session(&tag, h))
                .arg("c")
                .arg("a");
        }
        let rows: Vec<(Option<i64>, Option<i64>)> = pipe
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut out: Vec<SessionInfo> = hashes
            .into_iter()
            .zip(rows)
            .filter_map(|(hash, (c, a))| match (c, a) {
                (Some(created_ms), Some(expires_ms)) if expires_ms > now => Some(SessionInfo {
                    hash,
                    created_ms,
                    expires_ms,
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|s| s.created_ms);
        Ok(out)
    }

    /// Ends every session of a user ("log out everywhere"). Returns how many were live.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have ended some sessions.
    pub async fn destroy_user(&self, user: &str) -> Result<u64> {
        let index = self.keys.user_sessions(user);
        let tag = crate::keys::session_tag(user);
        let hashes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.client.con())
            .await
            .map_err(self.err())?;
        let mut total = 0;
        for chunk in hashes.chunks(500) {
            let mut call = scripts().session_destroy.call();
            call.key(index.clone());
            for h in chunk {
                call.key(self.keys.session(&tag, h));
                call.arg(h.as_str());
            }
            let n: i64 = call
                .invoke(&mut self.client.con(), self.client.url())
                .await?;
            total += n as u64;
        }
        Ok(total)
    }

    /// Deletes every session of the namespace and every user index (test environments,
    /// benchmarks, "log everyone out"). Returns how many keys were removed. Scans with SCAN,
    /// never blocking Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what a dropped call did not remove stays, and a second call removes it.
    pub async fn purge(&self) -> Result<u64> {
        let mut con = self.client.con();
        let mut removed = 0;
        let mut scan = crate::scan::Scan::keys(self.keys.sessions_pattern());
        while let Some(keys) = scan.next::<String>(&mut con).await.map_err(self.err())? {
            if keys.is_empty() {
                continue;
            }
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .map_err(self.err())?;
            removed += n;
        }
        Ok(removed)
    }

    /// Maintenance: drops index entries of sessions that expired (the sessions themselves
    /// disappear by TTL; indexes also expire with their longest session). Returns how many
    /// entries were dropped. Scans with SCAN and SSCAN, never blocking Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn cleanup(&self) -> Result<u64> {
        let mut con = self.client.con();
        let mut dropped = 0;
        let mut scan = crate::scan::Scan::keys(self.keys.user_sessions_pattern());
        while let Some(indexes) = scan.next::<String>(&mut con).await.map_err(self.err())? {
            for index in indexes {
                // The index's slot tag is its sessions' (`NamespaceKeys::user_sessions`).
                let Some(tag) = index
                    .split_once('{')
                    .and_then(|(_, rest)| rest.split_once('}'))
                    .map(|(tag, _)| tag.to_string())
                else {
                    continue;
                };
                let members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&index)
                    .query_async(&mut con)
                    .await
                    .map_err(self.err())?;
                let mut pipe = redis::pipe();
                for m in &members {
                    pipe.exists(self.keys.session(&tag, m));
                }
                let alive: Vec<bool> = if members.is_empty() {
                    Vec::new()
                } else {
                    pipe.query_async(&mut con).await.map_err(self.err())?
                };
                let dead: Vec<&String> = members
                    .iter()
                    .zip(alive)
                    .filter(|(_, a)| !a)
                    .map(|(m, _)| m)
                    .collect();
                if !dead.is_empty() {
                    let n: u64 = redis::cmd("SREM")
                        .arg(&index)
                        .arg(&dead)
                        .query_async(&mut con)
                        .await
                        .map_err(self.err())?;
                    dropped += n;
                }
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_256_bit_hex_and_never_printed() {
        let a = SessionId::generate().expect("rng");
        let b = SessionId::generate().expect("rng");
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(SessionId::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "SessionId(<redacted>)");
        assert_ne!(a.hash(), a.expose());
        assert!(SessionId::parse("forged").is_none());
        assert!(SessionId::parse(&"G".repeat(64)).is_none());
    }

    #[test]
    fn an_id_drawn_in_a_tag_keeps_it_and_240_random_bits() {
        let a = SessionId::generate_in("0f3a").expect("rng");
        let b = SessionId::generate_in("0f3a").expect("rng");
        assert_eq!((a.tag(), b.tag()), ("0f3a", "0f3a"));
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.expose()), Some(a.clone()));
        for bad in ["", "0f3", "0F3A", "zzzz", "0f3a0"] {
            assert!(SessionId::generate_in(bad).is_err(), "{bad:?}");
        }
    }
}
