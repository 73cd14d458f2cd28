//! Writing HTML: escaping (every string from Redis or a request goes through [`esc`]), links
//! that follow the mount path, the page frame and its forms.

use std::fmt::Write;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::{Principal, Role};

/// Text as HTML: `& < > " '` escaped, control characters shown escaped (`\n`, `\u{1b}`), so a
/// hostile job name neither opens a tag nor breaks out of an attribute.
pub(crate) fn esc(s: &str) -> String {
    escape(s, |c, out| {
        if c == '\n' {
            out.push(c);
        } else {
            let _ = write!(out, "{}", c.escape_debug());
        }
    })
}

/// Text as an attribute value: as [`esc`], but a control character becomes a character
/// reference (`&#9;`), so a form field posts back exactly what it holds.
pub(crate) fn attr(s: &str) -> String {
    escape(s, |c, out| {
        let _ = write!(out, "&#{};", c as u32);
    })
}

/// The markup characters as entities, control characters as `control` writes them.
fn escape(s: &str, control: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => control(c, &mut out),
            c => out.push(c),
        }
    }
    out
}

/// Characters left as they are in a path segment or a query value.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A path segment or query value, percent-encoded (a queue may be named `a/b?c`).
pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, KEEP).to_string()
}

/// `1,234,567`.
pub(crate) fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2026-12-03 14:05:09` (UTC).
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `3 min ago`, `in 5 s`.
pub(crate) fn ago(ms: i64, now: i64) -> String {
    let d = (now - ms).abs() / 1000;
    let span = match d {
        0..=59 => format!("{d} s"),
        60..=3599 => format!("{} min", d / 60),
        3600..=86_399 => format!("{} h", d / 3600),
        _ => format!("{} d", d / 86_400),
    };
    if ms <= now {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// A time with its distance, for a table cell.
pub(crate) fn when(ms: Option<i64>, now: i64) -> String {
    match ms {
        Some(ms) => format!(
            r#"<time title="{} UTC">{}</time>"#,
            time(ms),
            esc(&ago(ms, now))
        ),
        None => "-".into(),
    }
}

/// A milliseconds figure: `12.5 ms`, `3.2 s`, `-`.
pub(crate) fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000.0 => format!("{:.0} s", v / 1000.0),
        Some(v) if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.1} ms"),
    }
}

/// What every page knows of its request.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The path the dashboard is mounted at (`""` or `/admin`), for links.
    pub(crate) base: String,
    pub(crate) user: Principal,
    /// When the request started, for the footer's server time.
    pub(crate) started: std::time::Instant,
}

impl Ctx {
    /// `path` (which starts with `/`) under the mount path. The dashboard's root is the mount
    /// path itself (`/admin`, not `/admin/`: a nested router answers only the former).
    pub(crate) fn url(&self, path: &str) -> String {
        match path.strip_prefix('/') {
            Some(rest) if !self.base.is_empty() && (rest.is_empty() || rest.starts_with('?')) => {
                format!("{}{rest}", self.base)
            }
            _ => format!("{}{path}", self.base),
        }
    }

    /// A link to `path` under the mount path, escaped for an attribute.
    pub(crate) fn href(&self, path: &str) -> String {
        attr(&self.url(path))
    }

    /// Whether actions are shown and accepted.
    pub(crate) fn admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// A one-button form posting to `path`, or nothing for a read-only user. `fields` are
    /// extra hidden inputs (names and values escaped here).
    pub(crate) fn button(
        &self,
        path: &str,
        label: &str,
        class: &str,
        fields: &[(&str, &str)],
    ) -> String {
        if !self.admin() {
            return String::new();
        }
        let mut hidden = String::new();
        for (k, v) in fields {
            let _ = write!(
                hidden,
                r#"<input type="hidden" name="{}" value="{}">"#,
                attr(k),
                attr(v)
            );
        }
        format!(
            r#"<form method="post" action="{}" class="inline">{}{hidden}<button class="{}">{}</button></form>"#,
            self.href(path),
            self.csrf_field(),
            esc(class),
            esc(label)
        )
    }

    /// The hidden CSRF input of a form.
    pub(crate) fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            attr(&self.user.csrf)
        )
    }
}

/// The page frame: head, navigation, the body, the footer with the server time.
pub(crate) fn page(ctx: &Ctx, title: &str, active: &str, body: &str) -> String {
    let nav = [
        ("/", "Overview"),
        ("/workers", "Workers"),
        ("/cron", "Cron"),
    ]
    .iter()
    .map(|(path, label)| {
        let class = if *label == active {
            " class=\"on\""
        } else {
            ""
        };
        format!(r#"<a href="{}"{class}>{label}</a>"#, ctx.href(path))
    })
    .collect::<Vec<_>>()
    .join("");
    let who = match (ctx.user.who.is_empty(), ctx.user.role) {
        (true, Role::Admin) => String::new(),
        (true, Role::ReadOnly) => r#"<span class="badge">read-only</span>"#.into(),
        (false, role) => format!(
            r#"<span class="who">{} <span class="badge">{}</span></span>"#,
            esc(&ctx.user.who),
            role.name()
        ),
    };
    let logout = if ctx.user.by_cookie {
        format!(
            r#"<form method="post" action="{}" class="inline">{}<button class="link">Sign out</button></form>"#,
            ctx.href("/logout"),
            ctx.csrf_field()
        )
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · queue</title>
<link rel="stylesheet" href="{css}">
<script src="{js}" defer></script>
</head><body data-base="{base}">
<header><a class="brand" href="{home}">queue</a><nav>{nav}</nav><span class="live" id="live" title="live counts">●</span>{who}{logout}</header>
<main>
{body}
</main>
<footer>server time <span id="server-ms">{elapsed:.1}</span> ms · times are UTC</footer>
</body></html>"#,
        title = esc(title),
        css = ctx.href("/assets/app.css"),
        js = ctx.href("/assets/app.js"),
        base = esc(&ctx.base),
        home = ctx.href("/"),
        elapsed = ctx.started.elapsed().as_secs_f64() * 1000.0,
    )
}

/// A page with only a message (an error, a refusal).
pub(crate) fn message(ctx: &Ctx, title: &str, text: &str) -> String {
    page(
        ctx,
        title,
        "",
        &format!(
            r#"<h1>{}</h1><p class="message">{}</p><p><a href="{}">Back to the overview</a></p>"#,
            esc(title),
            esc(text),
            ctx.href("/")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_stays_text() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{1b}[31m"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{1b}[31m"
        );
        assert_eq!(enc("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(attr("a\tb\"<"), "a&#9;b&quot;&lt;");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(num(12), "12");
        assert_eq!(ago(0, 90_000), "1 min ago");
        assert_eq!(ago(5_000, 0), "in 5 s");
    }
}
