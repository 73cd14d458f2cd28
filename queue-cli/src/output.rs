//! How the CLI talks to people: tables, colour (only on a terminal, never with `NO_COLOR`),
//! relative times, confirmations, and stable JSON for scripts.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use anyhow::bail;
use serde::Serialize;

/// Output settings resolved once from the flags and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    pub color: bool,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let color = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Out { json, color }
    }

    pub fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    /// Prints one JSON document (a line) to stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }

    /// Prints text to stdout (a closed pipe surfaces as an io error the caller maps to exit 0).
    pub fn line(&self, s: &str) -> anyhow::Result<()> {
        writeln!(std::io::stdout().lock(), "{s}")?;
        Ok(())
    }
}

/// A plain table: a header row and aligned columns. Colour codes are not counted in widths.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self, out: &Out) -> String {
        let width = |s: &str| visible_len(s);
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(width(c));
                }
            }
        }
        let mut s = String::new();
        let fmt_row = |cells: &[String], s: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, c) in cells.iter().enumerate() {
                s.push_str(c);
                if i < last {
                    s.push_str(&" ".repeat(widths[i].saturating_sub(width(c)) + 2));
                }
            }
            s.push('\n');
        };
        let header: Vec<String> = self.header.iter().map(|h| out.bold(h)).collect();
        fmt_row(&header, &mut s);
        for r in &self.rows {
            fmt_row(r, &mut s);
        }
        s.trim_end_matches('\n').to_string()
    }
}

fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// "in 3m", "2m ago", "now": a time relative to `now_ms`.
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    let d = at_ms - now_ms;
    let span = human(d.unsigned_abs());
    if d.abs() < 1000 {
        "now".into()
    } else if d > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// 1500 -> "1s", 190000 -> "3m", 7200000 -> "2h".
pub fn human(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        // Rounded to the nearest unit: a job due in 9m59s reads "in 10m".
        1000..=59_499 => format!("{}s", (ms + 500) / 1000),
        59_500..=3_569_999 => format!("{}m", (ms + 30_000) / 60_000),
        3_570_000..=84_599_999 => format!("{}h", (ms + 1_800_000) / 3_600_000),
        _ => format!("{}d", (ms + 43_200_000) / 86_400_000),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a flag's duration with the project's one grammar ("500ms", "30s", "10m", "2h", "1d").
pub fn parse_duration(s: &str) -> Result<std::time::Duration, queue::DurationError> {
    queue::parse_duration(s)
}

/// A user-controlled string (a job, queue, schedule or worker name, an error message) made
/// safe for a terminal: control characters (newline, carriage return, escape, the C1 set),
/// Unicode line separators and bidirectional overrides are written as escapes (`\n`,
/// `\u{1b}`), so a name cannot forge an output line, move the cursor or reorder what follows.
/// Every other character prints as it is: names without such characters are unchanged.
///
/// This is for text output only; `--json` output is lossless (JSON escapes control characters
/// itself).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut escaped = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// [`printable`] for text the CLI itself laid out on several lines (a hint with the command
/// to re-run): newlines stay, every other control character is escaped. The user-controlled
/// parts of such text are escaped where it is formatted.
pub fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Line and paragraph separators, which some viewers break lines at.
        || matches!(c, '\u{2028}' | '\u{2029}')
        // Bidirectional embeddings, overrides and isolates (the "Trojan Source" characters).
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The command line as typed, with `extra` flags appended: what to re-run.
pub fn rerun_with(extra: &[&str]) -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "queue".into();
    }
    for e in extra {
        if !args.iter().any(|a| a == e) {
            args.push(e.to_string());
        }
    }
    args.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word of a command to copy into a shell: as it is when that is safe, else quoted.
pub fn shell_word(a: &str) -> Cow<'_, str> {
    if a.chars().any(needs_escape) {
        // ANSI-C quoting (bash, zsh, ksh): the control characters stay escapes, so the hint is
        // one line that runs the same command.
        Cow::Owned(ansi_c_quote(a))
    } else if a.is_empty()
        || !a
            .chars()
            .all(|c| c.is_alphanumeric() || "_-+=@%:,./".contains(c))
    {
        // Anything a shell could read as syntax (a glob, `;`, a quote, `$`) is quoted.
        Cow::Owned(format!("'{}'", a.replace('\'', "'\\''")))
    } else {
        Cow::Borrowed(a)
    }
}

/// `$'...'` with `\\`, `'` and the characters [`printable`] escapes written as `\xHH` or
/// `\uHHHH` (the forms a shell's ANSI-C quoting reads back).
fn ansi_c_quote(a: &str) -> String {
    let mut q = String::from("$'");
    for c in a.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '\'' => q.push_str("\\'"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                q.push_str(&format!("\\x{:02x}", c as u32))
            }
            // Every character `needs_escape` picks is in the Basic Multilingual Plane.
            c if needs_escape(c) => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

/// Asks before a destructive action: with `--yes` it proceeds; on a terminal it asks; without a
/// terminal it refuses and prints the command to re-run with `--yes`.
pub fn confirm(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {what} without confirmation; re-run with --yes:\n  {}",
            rerun_with(&["--yes"])
        );
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled; nothing was changed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(1_000_000 + 180_000, 1_000_000), "in 3m");
        assert_eq!(relative(1_000_000 - 120_000, 1_000_000), "2m ago");
        assert_eq!(relative(1_000_000, 1_000_000), "now");
        assert_eq!(human(7_200_000), "2h");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("10m").ok(),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(std::time::Duration::from_millis(500))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert!(matches!(
            printable("billing.send_invoice"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("naïve \\ \"q\" ok"), "naïve \\ \"q\" ok");
        assert_eq!(
            printable("a\nerror: forged\r\x1b[2J\u{9b}\u{202e}"),
            "a\\nerror: forged\\r\\u{1b}[2J\\u{9b}\\u{202e}"
        );
        assert_eq!(
            printable_lines("hint:\n  queue \x1b"),
            "hint:\n  queue \\u{1b}"
        );
    }

    #[test]
    fn shell_words_are_quoted_when_a_shell_would_read_them() {
        assert_eq!(shell_word("ops"), "ops");
        assert_eq!(shell_word("--unique-for=1h"), "--unique-for=1h");
        assert_eq!(shell_word("*"), "'*'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("a\nb'\x1b"), "$'a\\x0ab\\'\\x1b'");
    }

    #[test]
    fn tables_align_without_counting_colour_codes() {
        let out = Out {
            json: false,
            color: true,
        };
        let mut t = Table::new(&["A", "BB"]);
        t.row(vec![out.red("xyz"), "1".into()]);
        let plain: String = t
            .render(&out)
            .replace("\x1b[1m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[0m", "");
        assert_eq!(plain, "A    BB\nxyz  1");
    }
}
