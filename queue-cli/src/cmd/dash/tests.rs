//! The dashboard without a terminal: hand-built snapshots rendered on ratatui's `TestBackend`,
//! key presses turned into actions, and one run against a throwaway redis-server.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use queue::admin::{Admin, JobView, QueueStats, State};
use queue::wire::Job;
use queue::{Failure, JobId};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{Action, App, Focus, JobRef, Page, QueueRow, Snapshot, Status};
use super::{perform, snapshot, ui, Effect};

/// 2026-05-01 12:00:00 UTC: the snapshots' "now".
const NOW: i64 = 1_777_636_800_000;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, code: KeyCode) -> Option<Action> {
    app.on_key(key(code))
}

fn queue_row(name: &str, f: impl FnOnce(&mut QueueStats)) -> QueueRow {
    let mut stats = QueueStats {
        queue: name.into(),
        ..QueueStats::default()
    };
    f(&mut stats);
    QueueRow {
        stats,
        completed_per_minute: vec![0; 60],
    }
}

fn job(queue: &str, state: State, name: &str, seed: &str, errors: &[&str]) -> JobView {
    let id = JobId::deterministic((NOW - 600_000) as u64, seed);
    let args = serde_json::json!({ "to": "ada@example.com", "n": 7 });
    let job = Job {
        id: id.clone(),
        queue: queue.into(),
        version: queue::wire::WIRE_VERSION,
        name: name.into(),
        args: queue::wire::encode_value(&args, "arguments").expect("encode"),
        created_ms: NOW - 600_000,
        priority: 0,
        failed: errors.len() as u32,
        max_attempts: Some(1),
        backoff: None,
        timeout_ms: None,
        run_at_ms: None,
        unique_key: None,
        errors: errors
            .iter()
            .enumerate()
            .map(|(i, m)| Failure {
                attempt: i as u32 + 1,
                at_ms: NOW - 300_000,
                kind: "error".into(),
                message: m.to_string(),
            })
            .collect(),
        traceparent: None,
    };
    JobView {
        state,
        queue: queue.into(),
        id,
        job: Ok(job),
        at_ms: Some(NOW - 300_000),
        outcome: None,
        member: Vec::new(),
    }
}

/// Two queues (`mail` with dead jobs and a busy history, `billing` paused), the dead state of
/// `mail` selected and its jobs listed.
fn sample() -> App {
    let mut mail = queue_row("mail", |s| {
        s.pending = 3;
        s.scheduled = 1;
        s.active = 1;
        s.dead = 2;
        s.completed = 40;
        s.error_rate_1h = 0.125;
    });
    mail.completed_per_minute[50] = 2;
    mail.completed_per_minute[59] = 8;
    let billing = queue_row("billing", |s| {
        s.paused = true;
        s.pending = 12;
    });
    let mut app = App::new(10);
    app.state = State::Dead;
    let jobs = vec![
        job("mail", State::Dead, "cli.email", "a", &["smtp refused"]),
        job("mail", State::Dead, "cli.email", "b", &["mailbox full"]),
    ];
    app.apply(Snapshot {
        queues: vec![mail, billing],
        jobs_of: Some(Page {
            queue: "mail".into(),
            state: State::Dead,
            offset: 0,
            limit: 10,
        }),
        jobs,
        opened: None,
        detail: None,
        taken_ms: NOW,
    });
    app
}

/// The screen as text, one line a row.
fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| ui::draw(f, app)).expect("draw");
    let buf = terminal.backend().buffer();
    let mut lines = Vec::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        lines.push(line);
    }
    lines.join("\n")
}

fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
}

#[test]
fn the_queue_table_shows_counts_state_throughput_and_failure_rate() {
    let screen = render(&sample(), 120, 30);
    let mail = line_with(&screen, "mail");
    for cell in ["running", "3", "2", "40", "12.5%"] {
        assert!(mail.contains(cell), "{cell:?} in {mail:?}\n{screen}");
    }
    // The busiest minute is a full bar, a quarter of it a quarter bar, an idle minute a dot.
    assert!(
        mail.contains('█') && mail.contains('▂') && mail.contains('·'),
        "{mail}"
    );
    let billing = line_with(&screen, "billing");
    assert!(
        billing.contains("paused") && billing.contains("12"),
        "{billing}"
    );
    assert!(
        line_with(&screen, "QUEUE").contains("COMPLETED/MIN"),
        "{screen}"
    );
    // The state tabs carry the selected queue's counts.
    let tabs = line_with(&screen, "1 pending");
    for tab in [
        "1 pending 3",
        "2 scheduled 1",
        "5 active 1",
        "6 dead 2",
        "7 completed 40",
    ] {
        assert!(tabs.contains(tab), "{tab:?} in {tabs:?}");
    }
}

#[test]
fn the_job_list_shows_id_name_attempts_and_last_error() {
    let app = sample();
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains("dead jobs of mail · page 1 of 1"),
        "{screen}"
    );
    let first = &app.snapshot.jobs[0];
    let row = line_with(&screen, &first.id.to_string());
    for cell in ["cli.email", "1/1", "5m ago", "error: smtp refused"] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }
    assert!(line_with(&screen, "ATTEMPT").contains("DIED"), "{screen}");
}

#[test]
fn enter_opens_the_job_detail_and_esc_closes_it() {
    let mut app = sample();
    assert!(press(&mut app, KeyCode::Enter).is_none());
    assert_eq!(app.focus, Focus::Jobs);
    assert!(press(&mut app, KeyCode::Down).is_none());
    let second = app.snapshot.jobs[1].id.to_string();
    match press(&mut app, KeyCode::Enter) {
        Some(Action::Open(JobRef { queue, id })) => {
            assert_eq!((queue, id), ("mail".into(), second.clone()))
        }
        other => panic!("expected Open, got {other:?}"),
    }
    // The next refresh reads the opened job again.
    assert_eq!(app.want().open.map(|r| r.id), Some(second.clone()));
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains(&format!("job {second} · Esc closes")),
        "{screen}"
    );
    assert!(screen.contains(r#""to": "ada@example.com""#), "{screen}");
    assert!(screen.contains("\"n\": 7"), "{screen}");
    assert!(screen.contains("state      dead"), "{screen}");
    assert!(
        screen.contains("#1 2026-05-01 11:55:00Z error: mailbox full"),
        "{screen}"
    );

    // Modal: Tab does not change the state behind the pane.
    assert!(press(&mut app, KeyCode::Tab).is_none());
    assert_eq!(app.state, State::Dead);
    assert!(press(&mut app, KeyCode::Esc).is_none());
    assert!(app.detail.is_none());
    assert!(!render(&app, 120, 30).contains("Esc closes"));
    assert!(press(&mut app, KeyCode::Esc).is_none());
    assert_eq!(app.focus, Focus::Queues);
}

#[test]
fn hostile_names_and_errors_are_drawn_escaped() {
    let evil_queue = "evil\x1b[31m\nq";
    let mut app = App::new(10);
    let mut row = queue_row(evil_queue, |s| s.dead = 1);
    row.completed_per_minute[59] = 1;
    app.apply(Snapshot {
        queues: vec![row],
        jobs_of: Some(Page {
            queue: evil_queue.into(),
            state: State::Pending,
            offset: 0,
            limit: 10,
        }),
        jobs: vec![job(
            evil_queue,
            State::Pending,
            "x\x1b]0;pwned\x07\u{202e}",
            "c",
            &["line one\nerror: forged\x1b[2J"],
        )],
        opened: None,
        detail: None,
        taken_ms: NOW,
    });
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    assert!(app.detail.is_some());
    for help in [false, true] {
        app.help = help;
        let screen = render(&app, 140, 30);
        let raw: Vec<char> = screen
            .chars()
            .filter(|c| *c != '\n' && (c.is_control() || *c == '\u{202e}'))
            .collect();
        assert!(
            raw.is_empty(),
            "raw control characters {raw:?} in\n{screen}"
        );
        assert!(screen.contains(r"evil\u{1b}[31m\nq"), "{screen}");
        assert!(screen.contains(r"x\u{1b}]0;pwned\u{7}\u{202e}"), "{screen}");
        assert!(
            screen.contains(r"line one error: forged\u{1b}[2J"),
            "{screen}"
        );
    }
}

#[test]
fn keys_select_queues_states_and_pages() {
    let mut app = sample();
    assert!(press(&mut app, KeyCode::Up).is_none(), "already at the top");
    assert!(matches!(
        press(&mut app, KeyCode::Down),
        Some(Action::Refresh)
    ));
    assert_eq!(app.want().queue.as_deref(), Some("billing"));
    assert!(
        press(&mut app, KeyCode::Down).is_none(),
        "already at the bottom"
    );
    assert!(!app.jobs_current(), "billing's jobs are not read yet");
    assert!(render(&app, 120, 30).contains("reading…"));

    assert!(matches!(
        press(&mut app, KeyCode::Tab),
        Some(Action::Refresh)
    ));
    assert_eq!(app.state, State::Completed);
    assert!(matches!(
        press(&mut app, KeyCode::Tab),
        Some(Action::Refresh)
    ));
    assert_eq!(app.state, State::Pending, "Tab wraps around");
    assert!(matches!(
        press(&mut app, KeyCode::BackTab),
        Some(Action::Refresh)
    ));
    assert_eq!(app.state, State::Completed);
    assert!(matches!(
        press(&mut app, KeyCode::Char('3')),
        Some(Action::Refresh)
    ));
    assert_eq!(app.state, State::Retrying);
    assert!(press(&mut app, KeyCode::Char('3')).is_none(), "no change");

    // billing holds 12 pending jobs: pages of 5 are 0, 1 and 2.
    press(&mut app, KeyCode::Char('1'));
    app.page_size = 5;
    assert!(press(&mut app, KeyCode::PageUp).is_none());
    assert!(matches!(
        press(&mut app, KeyCode::PageDown),
        Some(Action::Refresh)
    ));
    assert!(matches!(
        press(&mut app, KeyCode::PageDown),
        Some(Action::Refresh)
    ));
    assert!(press(&mut app, KeyCode::PageDown).is_none(), "last page");
    assert_eq!((app.want().offset, app.want().limit), (10, 5));
    assert!(matches!(
        press(&mut app, KeyCode::PageUp),
        Some(Action::Refresh)
    ));
    assert_eq!(app.page, 1);
    // The jobs ran meanwhile: the refresh moves back to the last page there is.
    let mut snap = app.snapshot.clone();
    snap.queues[1].stats.pending = 4;
    app.apply(snap);
    assert_eq!(app.page, 0);
}

#[test]
fn keys_pause_resume_retry_and_quit() {
    let mut app = sample();
    assert!(matches!(press(&mut app, KeyCode::Char('p')), Some(Action::Pause(q)) if q == "mail"));
    press(&mut app, KeyCode::Down);
    assert!(
        matches!(press(&mut app, KeyCode::Char('p')), Some(Action::Resume(q)) if q == "billing")
    );
    press(&mut app, KeyCode::Up);

    // No job is selected while the queue table has the focus.
    assert!(press(&mut app, KeyCode::Char('r')).is_none());
    assert!(matches!(&app.status, Some(Status::Info(s)) if s.contains("Enter")));
    press(&mut app, KeyCode::Enter);
    let first = app.snapshot.jobs[0].id.clone();
    match press(&mut app, KeyCode::Char('r')) {
        Some(Action::Retry(v)) => assert_eq!((v.id, v.state), (first, State::Dead)),
        other => panic!("expected Retry, got {other:?}"),
    }

    // A pending job has nothing to retry.
    let mut pending = App::new(10);
    pending.apply(Snapshot {
        queues: vec![queue_row("mail", |s| s.pending = 1)],
        jobs_of: Some(Page {
            queue: "mail".into(),
            state: State::Pending,
            offset: 0,
            limit: 10,
        }),
        jobs: vec![job("mail", State::Pending, "cli.email", "d", &[])],
        ..Snapshot::default()
    });
    press(&mut pending, KeyCode::Enter);
    assert!(press(&mut pending, KeyCode::Char('r')).is_none());
    assert!(
        matches!(&pending.status, Some(Status::Info(s)) if s.contains("only dead, scheduled, retrying and recovered"))
    );
    assert!(render(&pending, 120, 30).contains("only dead, scheduled"));

    assert!(matches!(
        press(&mut app, KeyCode::Char('q')),
        Some(Action::Quit)
    ));
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(matches!(app.on_key(ctrl_c), Some(Action::Quit)));
    assert!(press(&mut app, KeyCode::Char('c')).is_none());
    // A terminal that reports key releases does not act twice.
    let release = KeyEvent::new_with_kind(
        KeyCode::Char('q'),
        KeyModifiers::NONE,
        KeyEventKind::Release,
    );
    assert!(app.on_key(release).is_none());
}

#[test]
fn help_errors_and_small_screens() {
    let mut app = sample();
    assert!(render(&app, 120, 30).contains("? keys · q quit"));
    press(&mut app, KeyCode::Char('?'));
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains("p pause/resume queue") && screen.contains("r retry job"),
        "{screen}"
    );
    press(&mut app, KeyCode::Char('?'));
    // A failed refresh and an action's result show together.
    let secrets = crate::error::Secrets::new(Some("redis://:s3cr3t@127.0.0.1:1"));
    let e = anyhow::anyhow!("no route to redis://:s3cr3t@127.0.0.1:1");
    app.refresh_error = Some(super::describe(&e, &secrets));
    app.status = Some(Status::Error("pause failed".into()));
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains("cannot refresh: no route to redis://") && screen.contains("pause failed"),
        "{screen}"
    );
    assert!(!screen.contains("s3cr3t"), "{screen}");
    app.status = None;

    // Nothing panics however small the terminal, with or without the detail pane.
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    for (w, h) in [(1, 1), (10, 4), (40, 8), (80, 24)] {
        render(&app, w, h);
        render(&App::new(5), w, h);
    }
    let mut empty = App::new(5);
    empty.apply(Snapshot {
        taken_ms: NOW,
        ..Snapshot::default()
    });
    assert!(render(&empty, 80, 24).contains("no queues yet"));
}

#[test]
fn refreshes_keep_the_selection_on_the_same_queue() {
    let mut app = sample();
    press(&mut app, KeyCode::Down);
    let mut snap = app.snapshot.clone();
    snap.queues.reverse();
    snap.queues.insert(0, queue_row("alpha", |_| {}));
    app.apply(snap);
    assert_eq!(app.want().queue.as_deref(), Some("billing"));

    // The open job gone (deleted meanwhile): the pane keeps its copy and says so.
    let mut app = sample();
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    let mut snap = app.snapshot.clone();
    snap.opened = app.want().open;
    snap.detail = None;
    app.apply(snap);
    assert!(app.detail.is_some());
    assert!(matches!(&app.status, Some(Status::Info(s)) if s.contains("no longer in mail")));
}

#[test]
fn sparklines_scale_to_the_busiest_minute() {
    let line = ui::sparkline(&[0, 1, 2, 4, 8, 3]);
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    assert_eq!(text, "·▁▂▄█▃");
    let idle: String = ui::sparkline(&[0, 0])
        .spans
        .iter()
        .map(|s| s.content.as_ref())
        .collect();
    assert_eq!(idle, "··");
}

/// Against a real server: a queue with a completed, a dead and a pending job, paused; the
/// snapshot renders, the dead job opens, `r` moves it back to pending, `p` resumes the queue.
#[tokio::test]
async fn a_real_snapshot_renders_and_a_retry_moves_the_dead_job() {
    use queue::broker::{Broker, Cause, Completion, Settle, Timing};
    use queue::{Client, NewJob, Retention};

    let server = queue::testing::RedisServer::start().expect("redis-server");
    let client = Client::connect(server.url()).await.expect("client");
    let args = serde_json::json!({ "to": "ada@example.com" });
    let args = queue::wire::encode_value(&args, "arguments").expect("encode");
    for _ in 0..3 {
        let job = NewJob::raw("dash.email", args.clone()).queue("mail");
        client.enqueue_job(job).await.expect("enqueue");
    }
    // Two attempts, as a worker would settle them: one completes, one is dead-lettered.
    let broker = Broker::new(client.clone(), "mail").expect("broker");
    let fetched = broker
        .fetch(2, Duration::from_secs(60))
        .await
        .expect("fetch");
    let [done, failed] = <[_; 2]>::try_from(fetched.jobs).expect("two jobs leased");
    let completion = Completion {
        lease: done.lease,
        result: queue::wire::encode_value(&"sent", "result").expect("encode"),
        unique_key: None,
        name: "dash.email".into(),
        timing: Timing::default(),
    };
    let retention = Retention::default();
    broker
        .complete(&[completion], &retention)
        .await
        .expect("complete");
    let mut dead = failed.job.expect("decodes");
    let now = chrono::Utc::now().timestamp_millis();
    dead.record_failure("error", "smtp refused", now);
    let settled = broker
        .fail(
            &failed.lease,
            &dead,
            &Settle::Dead,
            Cause::Handler,
            Timing::default(),
            &retention,
        )
        .await
        .expect("fail");
    assert!(settled, "the lease was held");
    broker.flush_metrics().await.expect("history");
    client.pause("mail").await.expect("pause");

    let admin = Admin::new(client.clone());
    let mut app = App::new(10);
    app.apply(snapshot(&admin, &app.want()).await.expect("snapshot"));
    let screen = render(&app, 120, 30);
    let row = line_with(&screen, "mail");
    assert!(row.contains("paused"), "{screen}");
    // One completion, in the current minute: the sparkline ends with a full bar.
    assert!(row.contains("·█"), "{row}");
    assert!(
        line_with(&screen, "1 pending").contains("6 dead 1"),
        "{screen}"
    );

    assert!(matches!(
        press(&mut app, KeyCode::Char('6')),
        Some(Action::Refresh)
    ));
    app.apply(snapshot(&admin, &app.want()).await.expect("snapshot"));
    assert!(app.jobs_current());
    assert_eq!(app.snapshot.jobs.len(), 1);
    press(&mut app, KeyCode::Enter);
    let open = press(&mut app, KeyCode::Enter).expect("open");
    match perform(&admin, open).await.expect("find") {
        Effect::Opened(r, view) => app.reopened(&r, view.map(|v| *v)),
        other => panic!("expected the job, got {other:?}"),
    }
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains("#1") && screen.contains("error: smtp refused"),
        "{screen}"
    );
    assert!(screen.contains(r#""to": "ada@example.com""#), "{screen}");

    let retry = press(&mut app, KeyCode::Char('r')).expect("retry");
    let said = perform(&admin, retry).await.expect("retry");
    assert!(
        matches!(&said, Effect::Said(s) if s.starts_with("retried job")),
        "{said:?}"
    );
    app.apply(snapshot(&admin, &app.want()).await.expect("snapshot"));
    let stats = &app.snapshot.queues[0].stats;
    assert_eq!((stats.dead, stats.pending), (0, 2));
    assert_eq!(app.detail.as_ref().map(|v| v.state), Some(State::Pending));
    assert!(render(&app, 120, 30).contains("state      pending"));

    let resume = press(&mut app, KeyCode::Char('p')).expect("resume");
    assert!(matches!(&resume, Action::Resume(q) if q == "mail"));
    perform(&admin, resume).await.expect("resume");
    assert!(!client.is_paused("mail").await.expect("is_paused"));
}
