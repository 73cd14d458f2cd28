//! How the CLI talks to people: tables, colour (only on a terminal, never with `NO_COLOR`),
//! relative times, confirmations, and stable JSON for scripts.

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
        .map(|a| {
            if a.contains(|c: char| c.is_whitespace() || "'\"{}$".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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
