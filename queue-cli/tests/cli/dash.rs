//! `queue dash` end to end: refused without a terminal, and on a real pseudo-terminal (through
//! util-linux `script`) it draws the queues, pauses one on `p`, quits on Ctrl-C and leaves the
//! terminal as it found it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use queue::{Client, NewJob};

fn dash(server: &crate::Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_queue"))
        .arg("dash")
        .args(args)
        .env("REDIS_URL", server.url())
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run queue")
}

#[test]
fn without_a_terminal_it_says_what_to_use_instead() {
    let server = crate::server();
    let out = dash(&server, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: queue dash needs a terminal; use queue stats --watch"
    );
    // Nothing was drawn into the pipe: no screen switch, no cursor moves.
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);

    let out = dash(&server, &["--json"]);
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("has no --json"), "{err}");
}

/// What the pseudo-terminal showed so far, read on a thread so every wait has a deadline.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Screen {
    fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !String::from_utf8_lossy(&self.seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(e) => panic!(
                    "{needle:?} not on screen ({e}); it showed:\n{}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Everything until the process closed the terminal.
    fn rest(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!(
                    "the terminal stayed open ({e}):\n{}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

#[tokio::test]
async fn on_a_terminal_it_draws_pauses_and_restores_the_terminal() {
    let server = crate::server();
    let client = Client::connect(&server.admin_url()).await.expect("client");
    let job = NewJob::raw("dash.email", vec![0x80]).queue("mail");
    client.enqueue_job(job).await.expect("enqueue");

    // `script` gives the command a pseudo-terminal; after `queue dash` exits, `stty -a` shows
    // whether the terminal is back in canonical mode with echo on.
    let shell = r#"stty cols 120 rows 30 && "$0" dash --interval 200ms; s=$?; stty -a; exit $s"#;
    let command = format!("sh -c '{shell}' '{}'", env!("CARGO_BIN_EXE_queue"));
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("REDIS_URL", server.url())
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs (Debian's bsdutils, an essential package)");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Screen {
        rx,
        seen: Vec::new(),
    };
    let mut keys = child.stdin.take().expect("stdin");
    let wait = Duration::from_secs(20);

    screen.wait_for("\x1b[?1049h", wait);
    screen.wait_for("running", wait);
    keys.write_all(b"p").expect("type p");
    screen.wait_for("paused", wait);
    assert!(client.is_paused("mail").await.expect("is_paused"));
    // Ctrl-C: raw mode makes it a key the dashboard reads, so it exits cleanly.
    keys.write_all(b"\x03").expect("type Ctrl-C");
    let shown = screen.rest(wait);

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let out = done_rx
        .recv_timeout(wait)
        .expect("script exits")
        .expect("wait");
    assert!(
        out.status.success(),
        "{:?}: {}\n{shown}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let after = shown
        .rsplit_once("\x1b[?1049l")
        .unwrap_or_else(|| panic!("the alternate screen was never left:\n{shown}"))
        .1;
    assert!(
        after.contains(" icanon") && after.contains(" echo ") && !after.contains("-icanon"),
        "the terminal is not back in cooked mode:\n{after}"
    );
    assert!(
        shown.contains("\x1b[?25h"),
        "the cursor was not shown again"
    );
}
