//! Who is asking: the standalone server's users (tokens and basic-auth users, each an admin or
//! read-only), the signed session cookie the login form sets, and the CSRF token every action
//! carries.
//!
//! A process draws a random secret at start; it signs the session cookies and derives the CSRF
//! tokens (HMAC-SHA256), so a restart signs everyone out and nothing about sessions is stored.
//! Secrets are compared through their SHA-256 digests, in constant time.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What a signed-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Everything: pause, resume, purge, retry, delete, trigger.
    Admin,
    /// Every page, no action.
    ReadOnly,
}

impl Role {
    /// `admin` or `read-only`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

/// One way in.
#[derive(Clone)]
pub(crate) struct User {
    role: Role,
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    Token(String),
    Basic { user: String, password: String },
}

// Never prints a token or a password.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.secret {
            Secret::Token(_) => "token".to_string(),
            Secret::Basic { user, .. } => format!("basic {user:?}"),
        };
        f.debug_struct("User")
            .field("role", &self.role)
            .field("kind", &kind)
            .finish()
    }
}

impl User {
    pub(crate) fn token(role: Role, token: String) -> User {
        User {
            role,
            secret: Secret::Token(token),
        }
    }

    pub(crate) fn basic(role: Role, user: String, password: String) -> User {
        User {
            role,
            secret: Secret::Basic { user, password },
        }
    }
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) role: Role,
    /// Who, for the page header: `token 1`, a basic user's name, or empty (no auth).
    pub(crate) who: String,
    /// The CSRF token of this user: every form carries it.
    pub(crate) csrf: String,
    /// Signed in with the cookie (it can sign out).
    pub(crate) by_cookie: bool,
}

/// The dashboard's users and its secret.
pub(crate) struct Auth {
    users: Vec<User>,
    read_only: bool,
    key: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// The session cookie's name.
pub(crate) const COOKIE: &str = "queue_session";

/// How long a session lasts after signing in.
pub(crate) const SESSION_MAX: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    pub(crate) fn new(users: Vec<User>, read_only: bool) -> Auth {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness (never seen): a key nobody can guess from outside the process
            // is still better than a fixed one.
            let seed = format!(
                "{:?}{}{:p}",
                std::time::SystemTime::now(),
                std::process::id(),
                &key
            );
            key = Sha256::digest(seed.as_bytes()).into();
        }
        Auth {
            users,
            read_only,
            key,
        }
    }

    /// Whether anyone must sign in.
    pub(crate) fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the login form asks for a user name (some user is a basic one).
    pub(crate) fn has_basic(&self) -> bool {
        self.users
            .iter()
            .any(|u| matches!(u.secret, Secret::Basic { .. }))
    }

    /// Whether the form asks for a token.
    pub(crate) fn has_token(&self) -> bool {
        self.users
            .iter()
            .any(|u| matches!(u.secret, Secret::Token(_)))
    }

    /// Who sent these headers: the bearer token, basic credentials or session cookie of a
    /// user; everyone when no user is configured; `None` when they must sign in.
    pub(crate) fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        if !self.required() {
            return Some(self.principal(None, false));
        }
        if let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = value.strip_prefix("Bearer ") {
                return self
                    .by_token(token.trim())
                    .map(|i| self.principal(Some(i), false));
            }
            if let Some(encoded) = value.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                return self
                    .by_password(user, password)
                    .map(|i| self.principal(Some(i), false));
            }
        }
        // `<user index>.<issued, unix s>.<mac>`: signed, and refused once SESSION_MAX old.
        let cookie = cookie(headers, COOKIE)?;
        let mut parts = cookie.splitn(3, '.');
        let (index, issued, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let index: usize = index.parse().ok()?;
        let issued_at: u64 = issued.parse().ok()?;
        let user = self.users.get(index)?;
        let fresh = unix_secs().saturating_sub(issued_at) < SESSION_MAX.as_secs();
        (fresh && same(&self.sign(&session_text(index, issued_at, user)), mac))
            .then(|| self.principal(Some(index), true))
    }

    /// Someone not signed in, on the pages open to them (the login form, the assets).
    pub(crate) fn anonymous(&self) -> Principal {
        Principal {
            role: Role::ReadOnly,
            who: String::new(),
            csrf: self.sign("csrf|nobody"),
            by_cookie: false,
        }
    }

    /// The login form's answer: the cookie value for the user it names, if any.
    pub(crate) fn login(&self, user: &str, secret: &str) -> Option<String> {
        let index = if user.is_empty() {
            self.by_token(secret)?
        } else {
            self.by_password(user, secret)?
        };
        let u = self.users.get(index)?;
        let now = unix_secs();
        Some(format!(
            "{index}.{now}.{}",
            self.sign(&session_text(index, now, u))
        ))
    }

    /// Whether `token` is the CSRF token of `p`.
    pub(crate) fn csrf_ok(&self, p: &Principal, token: &str) -> bool {
        same(&p.csrf, token)
    }

    fn principal(&self, index: Option<usize>, by_cookie: bool) -> Principal {
        let (role, who) = match index.and_then(|i| self.users.get(i).map(|u| (i, u))) {
            Some((i, u)) => (
                u.role,
                match &u.secret {
                    Secret::Token(_) => format!("token {}", i + 1),
                    Secret::Basic { user, .. } => user.clone(),
                },
            ),
            None => (Role::Admin, String::new()),
        };
        let role = if self.read_only { Role::ReadOnly } else { role };
        let subject = index.map_or_else(|| "anyone".to_string(), |i| i.to_string());
        Principal {
            role,
            who,
            csrf: self.sign(&format!("csrf|{subject}")),
            by_cookie,
        }
    }

    fn by_token(&self, token: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|u| matches!(&u.secret, Secret::Token(t) if same(t, token)))
    }

    fn by_password(&self, user: &str, password: &str) -> Option<usize> {
        self.users.iter().position(|u| {
            matches!(&u.secret, Secret::Basic { user: n, password: p } if same(n, user) & same(p, password))
        })
    }

    fn sign(&self, text: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC takes a key of any length.
            return String::new();
        };
        mac.update(text.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// What a session cookie signs: the user's index and a digest of its secret, so changing a
/// user's token or password ends its sessions too.
fn session_text(index: usize, issued: u64, u: &User) -> String {
    let secret = match &u.secret {
        Secret::Token(t) => format!("t{t}"),
        Secret::Basic { user, password } => format!("b{user}:{password}"),
    };
    format!(
        "session|{index}|{issued}|{}",
        hex(&Sha256::digest(secret.as_bytes()))
    )
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name`.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
        h
    }

    #[test]
    fn tokens_passwords_and_cookies_sign_in_with_their_role() {
        let auth = Auth::new(
            vec![
                User::token(Role::Admin, "admin-token-0123456789".into()),
                User::basic(Role::ReadOnly, "viewer".into(), "password1".into()),
            ],
            false,
        );
        assert!(auth.identify(&HeaderMap::new()).is_none());
        let p = auth
            .identify(&headers("authorization", "Bearer admin-token-0123456789"))
            .expect("token");
        assert_eq!(p.role, Role::Admin);
        assert!(auth
            .identify(&headers("authorization", "Bearer admin-token-012345678"))
            .is_none());
        let basic = base64::engine::general_purpose::STANDARD.encode("viewer:password1");
        let v = auth
            .identify(&headers("authorization", &format!("Basic {basic}")))
            .expect("basic");
        assert_eq!(v.role, Role::ReadOnly);
        assert_ne!(v.csrf, p.csrf, "a CSRF token belongs to its user");
        assert!(auth.csrf_ok(&v, &v.csrf) && !auth.csrf_ok(&v, &p.csrf));

        let cookie = auth.login("viewer", "password1").expect("login");
        let c = auth
            .identify(&headers("cookie", &format!("a=b; {COOKIE}={cookie}")))
            .expect("cookie");
        assert_eq!((c.role, c.by_cookie), (Role::ReadOnly, true));
        assert!(auth.login("viewer", "wrong").is_none());
        assert!(auth.login("", "admin-token-0123456789").is_some());
        // A cookie naming the other user, older than a session lasts, or signed by another
        // process, is refused.
        let forged = format!("0.{}", cookie.split_once('.').expect("dot").1);
        assert!(auth
            .identify(&headers("cookie", &format!("{COOKIE}={forged}")))
            .is_none());
        let old = unix_secs() - SESSION_MAX.as_secs() - 1;
        let stale = format!(
            "1.{old}.{}",
            auth.sign(&session_text(1, old, &auth.users[1]))
        );
        assert!(auth
            .identify(&headers("cookie", &format!("{COOKIE}={stale}")))
            .is_none());
        let other = Auth::new(Vec::new(), false);
        assert_eq!(
            other.identify(&HeaderMap::new()).map(|p| p.role),
            Some(Role::Admin)
        );
        let ro = Auth::new(Vec::new(), true);
        assert_eq!(
            ro.identify(&HeaderMap::new()).map(|p| p.role),
            Some(Role::ReadOnly)
        );
        assert!(!format!("{auth:?}").contains("password1"));
    }
}
