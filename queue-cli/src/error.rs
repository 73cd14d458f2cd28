//! How a failed command is reported: one line of text on stderr (a few when a hint needs
//! them), or with `--json` one JSON document on stdout, where the command's output would have
//! been (for `stats --watch` and `events --follow`, the last line of the stream):
//!
//! ```text
//! {"error":{"kind":"out_of_memory","retryable":false,"message":"Redis is out of memory ..."}}
//! ```
//!
//! `kind` is the library's [`queue::ErrorKind`] in snake case (`connection`, `timeout`,
//! `not_found`, `out_of_memory`, `auth`, `config`...) when the library raised the error;
//! otherwise `usage` for a command line the parser refused, `redis` for a Redis error outside
//! the library (`bench`'s own measurements), `io` for a local file or stream, and `other` for
//! what the CLI itself refused (invalid JSON, a missing `--yes`, a non-empty queue).
//! `retryable` is [`queue::Error::is_retryable`]. The exit code does not depend on `--json`:
//! 2 for usage errors, 1 for the rest. Neither form ever carries the Redis URL's password.

use std::borrow::Cow;
use std::process::ExitCode;

use serde::Serialize;

use crate::output::{printable, printable_lines, Out};

#[derive(Debug, Serialize)]
struct Document<'a> {
    error: Body<'a>,
}

#[derive(Debug, Serialize)]
struct Body<'a> {
    kind: &'a str,
    retryable: bool,
    message: &'a str,
}

/// Prints the error a command failed with, as text or JSON, and returns the exit code.
pub fn report(e: &anyhow::Error, out: Out, secrets: &Secrets) -> ExitCode {
    // A closed pipe (`queue jobs ... | head`) is not an error worth reporting.
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    if out.json {
        let (kind, retryable) = classify(e);
        let message = explain(e, |s, _| secrets.scrub(s));
        print_json(&out, &kind, retryable, &message);
    } else {
        // Library messages are one line by design, so a newline in one comes from a name and
        // is escaped with the rest; the CLI's own messages may lay a hint out on a second line.
        let message = explain(e, |s, from_library| {
            let s = secrets.scrub(s);
            if from_library {
                printable(&s).into_owned()
            } else {
                printable_lines(&s)
            }
        });
        eprintln!("{} {message}", out.red("error:"));
    }
    ExitCode::FAILURE
}

/// Reports a command line the parser refused. Help and version requests, and errors without
/// `--json` on the command line, are clap's own output; with `--json` the error is the usual
/// JSON document of kind `usage`. Exits either way.
pub fn usage(e: clap::Error) -> ! {
    if !e.use_stderr() || !json_requested() {
        e.exit();
    }
    let rendered = e.render().to_string();
    let message = rendered.trim();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = Secrets::from_command_line().scrub(message);
    let out = Out {
        json: true,
        color: false,
    };
    print_json(&out, "usage", false, &message);
    std::process::exit(e.exit_code());
}

/// Whether `--json` is on the command line (before a `--`): the parser refused the command
/// line, so its flags are not available.
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn print_json(out: &Out, kind: &str, retryable: bool, message: &str) {
    // Nothing is left to report a failure to print the error to (a closed stdout).
    let _ = out.json(&Document {
        error: Body {
            kind,
            retryable,
            message,
        },
    });
}

/// The `kind` and `retryable` of the JSON document.
fn classify(e: &anyhow::Error) -> (Cow<'static, str>, bool) {
    if let Some(err) = e.chain().find_map(|c| c.downcast_ref::<queue::Error>()) {
        return (Cow::Owned(kind_name(err.kind())), err.is_retryable());
    }
    if let Some(err) = e
        .chain()
        .find_map(|c| c.downcast_ref::<redis::RedisError>())
    {
        let passes = err.is_timeout() || err.is_io_error() || err.is_connection_dropped();
        return (Cow::Borrowed("redis"), passes);
    }
    if e.chain().any(|c| c.is::<std::io::Error>()) {
        return (Cow::Borrowed("io"), false);
    }
    (Cow::Borrowed("other"), false)
}

/// `OutOfMemory` -> `out_of_memory`. The kind has no name of its own to print, so its variant
/// name is the source: a variant added to the library is named here without a change.
fn kind_name(kind: queue::ErrorKind) -> String {
    let debug = format!("{kind:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

/// One line (or a few) saying what is wrong and what to do; never a debug dump. `show` renders
/// each piece of text, and is told whether the library wrote it.
fn explain(e: &anyhow::Error, show: impl Fn(&str, bool) -> String) -> String {
    use queue::Error as E;
    let advice = match e.chain().find_map(|c| c.downcast_ref::<E>()) {
        Some(E::Unreachable { url, source, .. }) => Some(format!(
            "cannot reach Redis at {url} ({source}); is redis-server running? Set --redis-url or REDIS_URL"
        )),
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::Auth => Some(
            format!("Redis refused the credentials ({source}); put them in the URL: redis://user:password@host:port (or redis+cluster://user:password@host:port,... or redis+sentinel://user:password@host,.../master)"),
        ),
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::Permission => Some(
            format!("Redis refused the command for this user ({source}); the ACL user needs the commands and keys of the queue"),
        ),
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::Tls => Some(
            format!("the TLS handshake with Redis failed ({source}); the server's certificate must chain to QUEUE_TLS_CA_FILE (or the system's roots), and a server that asks for a client certificate needs QUEUE_TLS_CERT_FILE and QUEUE_TLS_KEY_FILE"),
        ),
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::OutOfMemory => Some(
            format!("Redis is out of memory and refuses writes ({source}); raise maxmemory or free memory"),
        ),
        Some(E::NotFound(what)) => Some(format!("no such {what}")),
        _ => None,
    };
    if let Some(advice) = advice {
        return show(&advice, true);
    }
    let mut parts = Vec::new();
    for cause in e.chain() {
        let from_library = cause.downcast_ref::<E>().is_some();
        parts.push(show(&cause.to_string(), from_library));
        // The library's messages already end with their source's.
        if from_library {
            break;
        }
    }
    parts.join(": ")
}

/// The passwords the command was given (in the Redis URL), to scrub from whatever an error
/// says: the library redacts the URLs it prints, but not every URL form, and not a password
/// quoted by something else.
#[derive(Debug, Default)]
pub struct Secrets {
    urls: Vec<String>,
    words: Vec<String>,
}

impl Secrets {
    /// The secrets of a Redis URL (`--redis-url` or `REDIS_URL`), if one was given.
    pub fn new(url: Option<&str>) -> Secrets {
        let mut s = Secrets::default();
        if let Some(url) = url {
            s.add(url);
        }
        s
    }

    /// The secrets of every Redis URL on the raw command line and in `REDIS_URL`: for errors
    /// raised before the flags are parsed.
    fn from_command_line() -> Secrets {
        let mut s = Secrets::default();
        if let Ok(url) = std::env::var("REDIS_URL") {
            s.add(&url);
        }
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for (i, a) in args.iter().enumerate() {
            if let Some(url) = a.strip_prefix("--redis-url=") {
                s.add(url);
            } else if a == "--redis-url" {
                if let Some(url) = args.get(i + 1) {
                    s.add(url);
                }
            }
        }
        s
    }

    fn add(&mut self, url: &str) {
        if url.is_empty() {
            return;
        }
        self.urls.push(url.to_string());
        for word in passwords(url) {
            if !word.is_empty() && !self.words.contains(&word) {
                self.words.push(word);
            }
        }
        // Longest first: a password that contains another is replaced whole.
        self.words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    }

    /// `s` with every URL given replaced by its redacted form and every password by `***`.
    ///
    /// A URL without credentials holds nothing to hide, and stays (a message may quote its
    /// scheme alone). A password of six characters or more is replaced wherever it appears; a
    /// shorter one only where it stands alone (not inside a longer run of letters and digits),
    /// so a one-letter password does not blank that letter in every word.
    pub fn scrub(&self, s: &str) -> String {
        let mut s = s.to_string();
        for url in &self.urls {
            if url.contains('@') && s.contains(url.as_str()) {
                s = s.replace(url.as_str(), &queue::admin::redact(url));
            }
        }
        for word in &self.words {
            if word.chars().count() >= 6 {
                s = s.replace(word.as_str(), "***");
            } else {
                s = replace_standalone(&s, word);
            }
        }
        s
    }
}

/// `s` with each occurrence of `word` that is not part of a longer run of letters and digits
/// replaced by `***`.
fn replace_standalone(s: &str, word: &str) -> String {
    if word.is_empty() {
        return s.to_string();
    }
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(word) {
        let before = if at > 0 {
            rest[..at].chars().last()
        } else {
            out.chars().last()
        };
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if alnum(before) || alnum(after) {
            out.push_str(word);
        } else {
            out.push_str("***");
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The passwords in a Redis URL, as written and percent-decoded: the user info's
/// (`redis://user:password@host`) and the `pass`/`password` query parameters
/// (`redis+unix:///run/redis.sock?pass=...`).
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some((scheme, rest)) = url.split_once("://") else {
        return found;
    };
    // As the library's `redact` reads them: nothing after the host of a TCP URL may hold an
    // `@`, so its last `@` ends the user info even when the password holds a raw `?` or `/`;
    // a unix URL's path and query may, so there only the part before the path counts.
    let at = if scheme.to_ascii_lowercase().ends_with("unix") {
        rest[..rest.find(['/', '?']).unwrap_or(rest.len())].rfind('@')
    } else {
        rest.rfind('@')
    };
    let after_userinfo = match at {
        Some(at) => {
            // Without a colon the user info is a user name, which is no secret.
            if let Some((_, password)) = rest[..at].split_once(':') {
                found.push(password.to_string());
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let query = after_userinfo.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split(['&', '#']) {
        if let Some(("pass" | "password", value)) = pair.split_once('=') {
            found.push(value.to_string());
        }
    }
    let decoded: Vec<String> = found.iter().map(|w| percent_decode(w)).collect();
    found.extend(decoded);
    found
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_short_password_is_hidden_where_it_stands_alone_and_words_stay_whole() {
        let mut secrets = Secrets::default();
        secrets.add("redis+cluster://u:e@127.0.0.1:1");
        let shown = secrets.scrub("cannot reach Redis at redis://u:e@127.0.0.1:1 (auth e)");
        assert!(shown.contains("cannot reach Redis"), "{shown}");
        assert!(
            !shown.contains(":e@") && shown.contains("(auth ***)"),
            "{shown}"
        );
        let mut secrets = Secrets::default();
        secrets.add("redis+cluster://");
        let shown = secrets.scrub("expected redis+cluster://[user:password@]host");
        assert_eq!(shown, "expected redis+cluster://[user:password@]host");
        let mut secrets = Secrets::default();
        secrets.add("redis://u:hunter22@h");
        assert_eq!(secrets.scrub("xhunter22x"), "x***x");
    }

    use super::*;

    #[test]
    fn kinds_are_snake_case_variant_names() {
        assert_eq!(kind_name(queue::ErrorKind::OutOfMemory), "out_of_memory");
        assert_eq!(kind_name(queue::ErrorKind::NotFound), "not_found");
        assert_eq!(kind_name(queue::ErrorKind::Connection), "connection");
        assert_eq!(kind_name(queue::ErrorKind::ReadOnly), "read_only");
    }

    #[test]
    fn passwords_are_scrubbed_in_every_url_form() {
        // The URL itself is the library's redacted form, whatever that keeps of the rest.
        let url = "redis://app:s3cr%40t@db:6379/0";
        let scrubbed = Secrets::new(Some(url)).scrub(&format!("at {url}, said s3cr@t"));
        assert_eq!(
            scrubbed,
            format!("at {}, said ***", queue::admin::redact(url))
        );
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
        let s = Secrets::new(Some("redis+unix:///run/redis.sock?db=2&pass=hunter2"));
        let scrubbed = s.scrub("cannot open /run/redis.sock with hunter2");
        assert_eq!(scrubbed, "cannot open /run/redis.sock with ***");
        let s = Secrets::new(Some("redis://:pa?ss/word@db:6379"));
        assert_eq!(s.scrub("refused pa?ss/word"), "refused ***");
        let s = Secrets::new(Some("redis://someone@db:6379"));
        assert_eq!(s.scrub("someone at db"), "someone at db");
        assert_eq!(Secrets::new(None).scrub("as is"), "as is");
    }

    #[test]
    fn library_messages_come_once_with_their_advice() {
        let e = anyhow::Error::new(queue::Error::NotFound("job 01J".into()));
        assert_eq!(explain(&e, |s, _| s.to_string()), "no such job 01J");
        let e = anyhow::Error::new(queue::Error::Config("bad\nname".into()))
            .context("connecting to redis://db");
        let parts = explain(&e, |s, lib| format!("[{lib}]{}", printable(s)));
        assert_eq!(
            parts,
            "[false]connecting to redis://db: [true]invalid configuration: bad\\nname"
        );
        let (kind, retryable) = classify(&e);
        assert_eq!((kind.as_ref(), retryable), ("config", false));
        let io = anyhow::Error::new(std::io::Error::other("disk")).context("cannot read x");
        assert_eq!(classify(&io).0, "io");
        assert_eq!(classify(&anyhow::anyhow!("refused")).0, "other");
    }
}
