//! The dashboard's state and its key handling. Nothing here touches Redis or the terminal: a
//! key press changes the selection and may return an [`Action`], which the loop in `dash.rs`
//! carries out; what Redis answers comes back as a [`Snapshot`] or a status message. So tests
//! drive the whole interaction with hand-built snapshots and key events.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use queue::admin::{JobView, QueueStats, State};

/// Minutes of history behind each queue's throughput sparkline.
pub const THROUGHPUT_MINUTES: usize = 60;

/// One queue as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub stats: QueueStats,
    /// Jobs completed in each minute, oldest first, ending with the current minute.
    pub completed_per_minute: Vec<u64>,
}

/// One page of jobs: which queue, state and rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub queue: String,
    pub state: State,
    pub offset: usize,
    pub limit: usize,
}

/// A job by queue and id, as the detail pane follows it from refresh to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub queue: String,
    pub id: String,
}

/// What a refresh should read: the selection, in the terms of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The selected queue (`None` before the first snapshot: the first queue).
    pub queue: Option<String>,
    pub state: State,
    pub offset: usize,
    pub limit: usize,
    /// The job whose detail pane is open: read again on every refresh, so the pane shows the
    /// job moving (retried, picked up, finished) instead of what it was when it was opened.
    pub open: Option<JobRef>,
}

/// What one refresh read from Redis.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub queues: Vec<QueueRow>,
    /// Which page `jobs` is (`None`: there is no queue).
    pub jobs_of: Option<Page>,
    pub jobs: Vec<JobView>,
    /// The job the refresh was asked to read again (the open one).
    pub opened: Option<JobRef>,
    /// That job as it is now, if it still exists.
    pub detail: Option<JobView>,
    /// When it was read (Unix ms): the "now" relative times are drawn against, so drawing
    /// does not read the clock.
    pub taken_ms: i64,
}

/// Something only Redis can do, returned by [`App::on_key`] for the loop to carry out.
#[derive(Debug)]
pub enum Action {
    /// Leave the dashboard.
    Quit,
    /// The selection changed (queue, state, page): read Redis now rather than at the next tick.
    Refresh,
    /// Stop workers leasing from this queue.
    Pause(String),
    /// Let workers lease from this queue again.
    Resume(String),
    /// Run this job again now (dead, scheduled, retrying or recovered).
    Retry(Box<JobView>),
    /// Read this job now for the detail pane (which shows the listed copy until then).
    Open(JobRef),
}

/// Where Up and Down move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Queues,
    Jobs,
}

/// The status line: what the last action did, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Info(String),
    Error(String),
}

/// The fetched data and the selection.
#[derive(Debug)]
pub struct App {
    pub snapshot: Snapshot,
    /// Index into `snapshot.queues`; kept on the same queue by name across refreshes.
    pub selected: usize,
    pub state: State,
    /// Page of the job list, from 0.
    pub page: usize,
    /// Rows per page: the loop sets it from the terminal's height before each refresh.
    pub page_size: usize,
    pub focus: Focus,
    /// Index into `snapshot.jobs` (shown while the job list has the focus).
    pub job: usize,
    /// The job whose detail pane is open.
    pub detail: Option<JobView>,
    /// Lines scrolled off the top of the detail pane.
    pub detail_scroll: u16,
    /// Whether the status line lists the key bindings.
    pub help: bool,
    pub status: Option<Status>,
    /// Why the last refresh failed, until one succeeds: the data on screen is that old.
    pub refresh_error: Option<String>,
}

impl App {
    pub fn new(page_size: usize) -> App {
        App {
            snapshot: Snapshot::default(),
            selected: 0,
            state: State::Pending,
            page: 0,
            page_size: page_size.max(1),
            focus: Focus::Queues,
            job: 0,
            detail: None,
            detail_scroll: 0,
            help: false,
            status: None,
            refresh_error: None,
        }
    }

    pub fn selected_queue(&self) -> Option<&QueueRow> {
        self.snapshot.queues.get(self.selected)
    }

    /// What the next refresh should read.
    pub fn want(&self) -> Want {
        Want {
            queue: self.selected_queue().map(|q| q.stats.queue.clone()),
            state: self.state,
            offset: self.page * self.page_size,
            limit: self.page_size,
            open: self.detail.as_ref().map(job_ref),
        }
    }

    /// Whether the listed jobs are the selected page (they are not between a key press that
    /// changed the selection and the refresh it asked for).
    pub fn jobs_current(&self) -> bool {
        let want = self.want();
        self.snapshot.jobs_of.as_ref().is_some_and(|p| {
            Some(&p.queue) == want.queue.as_ref()
                && p.state == want.state
                && p.offset == want.offset
                && p.limit == want.limit
        })
    }

    /// The job under the cursor, when the job list has the focus and shows the selection.
    pub fn selected_job(&self) -> Option<&JobView> {
        if self.focus != Focus::Jobs || !self.jobs_current() {
            return None;
        }
        self.snapshot.jobs.get(self.job)
    }

    /// Takes a refresh's result, keeping the selection on the same queue (by name) when queues
    /// come or go.
    pub fn apply(&mut self, snap: Snapshot) {
        let name = self.selected_queue().map(|q| q.stats.queue.clone());
        self.selected = name
            .and_then(|n| snap.queues.iter().position(|q| q.stats.queue == n))
            .unwrap_or(self.selected)
            .min(snap.queues.len().saturating_sub(1));
        if let Some(r) = &snap.opened {
            self.reopened(r, snap.detail.clone());
        }
        self.snapshot = snap;
        // A page emptied meanwhile (its jobs retried, run or deleted): show the last one left.
        let pages = self.state_count().div_ceil(self.page_size as u64).max(1) as usize;
        self.page = self.page.min(pages - 1);
        self.job = self.job.min(self.snapshot.jobs.len().saturating_sub(1));
        self.refresh_error = None;
    }

    /// Takes a fresh read of job `r` for the detail pane, if that pane is still open on it.
    pub fn reopened(&mut self, r: &JobRef, now: Option<JobView>) {
        if self.detail.as_ref().map(job_ref).as_ref() != Some(r) {
            return;
        }
        match now {
            Some(v) => self.detail = Some(v),
            // Deleted, or expired from the completed set: the pane keeps its last copy.
            None => {
                let msg = format!("job {} is no longer in {}", r.id, r.queue);
                self.status = Some(Status::Info(msg));
            }
        }
    }

    /// Moves `by` rows in the job list, or scrolls the detail pane.
    fn move_cursor(&mut self, by: isize) -> Option<Action> {
        if self.detail.is_some() {
            self.detail_scroll = self.detail_scroll.saturating_add_signed(by as i16);
            return None;
        }
        match self.focus {
            Focus::Queues => {
                let last = self.snapshot.queues.len().saturating_sub(1);
                let to = self.selected.saturating_add_signed(by).min(last);
                if to == self.selected {
                    return None;
                }
                self.selected = to;
                self.page = 0;
                self.job = 0;
                Some(Action::Refresh)
            }
            Focus::Jobs => {
                let last = self.snapshot.jobs.len().saturating_sub(1);
                self.job = self.job.saturating_add_signed(by).min(last);
                None
            }
        }
    }

    fn select_state(&mut self, state: State) -> Option<Action> {
        if state == self.state {
            return None;
        }
        self.state = state;
        self.page = 0;
        self.job = 0;
        Some(Action::Refresh)
    }

    /// How many jobs the selected queue holds in the selected state (for paging).
    fn state_count(&self) -> u64 {
        self.selected_queue()
            .map_or(0, |q| count_of(&q.stats, self.state))
    }

    fn page_by(&mut self, forward: bool) -> Option<Action> {
        if self.detail.is_some() {
            let by = if forward { 10 } else { -10 };
            return self.move_cursor(by);
        }
        let pages = self.state_count().div_ceil(self.page_size as u64).max(1) as usize;
        let to = if forward {
            (self.page + 1).min(pages - 1)
        } else {
            self.page.saturating_sub(1)
        };
        if to == self.page {
            return None;
        }
        self.page = to;
        self.job = 0;
        Some(Action::Refresh)
    }

    /// Handles one key press: moves the selection, and returns what only Redis can do.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        // Terminals that report releases (Windows, the kitty protocol) would act twice.
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            // Raw mode turns Ctrl-C into a key press instead of SIGINT.
            KeyCode::Char('c') if ctrl => Some(Action::Quit),
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => {
                self.help = !self.help;
                None
            }
            KeyCode::Esc => {
                if self.detail.take().is_some() {
                    self.detail_scroll = 0;
                } else {
                    self.focus = Focus::Queues;
                }
                None
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_cursor(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_cursor(1),
            KeyCode::PageUp => self.page_by(false),
            KeyCode::PageDown => self.page_by(true),
            KeyCode::Char('p') => self.pause_or_resume(),
            KeyCode::Char('r') => self.retry(),
            // The detail pane is modal: the selection behind it stays put.
            _ if self.detail.is_some() => None,
            KeyCode::Enter => self.enter(),
            KeyCode::Tab => self.select_state(next_state(self.state, 1)),
            KeyCode::BackTab => self.select_state(next_state(self.state, -1)),
            KeyCode::Char(c @ '1'..='7') => {
                let i = c as usize - '1' as usize;
                self.select_state(State::ALL[i])
            }
            _ => None,
        }
    }

    /// Enter on the queue table moves into its job list; on a job, opens its detail pane.
    fn enter(&mut self) -> Option<Action> {
        match self.focus {
            Focus::Queues => {
                let q = self.selected_queue()?;
                if self.jobs_current() && self.snapshot.jobs.is_empty() {
                    let msg = format!("no {} jobs in {}", self.state.name(), q.stats.queue);
                    self.status = Some(Status::Info(msg));
                    return None;
                }
                self.focus = Focus::Jobs;
                None
            }
            Focus::Jobs => {
                let view = self.selected_job()?.clone();
                let r = job_ref(&view);
                self.detail = Some(view);
                self.detail_scroll = 0;
                Some(Action::Open(r))
            }
        }
    }

    fn pause_or_resume(&mut self) -> Option<Action> {
        let q = self.selected_queue()?;
        let name = q.stats.queue.clone();
        Some(if q.stats.paused {
            Action::Resume(name)
        } else {
            Action::Pause(name)
        })
    }

    fn retry(&mut self) -> Option<Action> {
        let Some(view) = self.detail.as_ref().or_else(|| self.selected_job()) else {
            self.status = Some(Status::Info(
                "select a job to retry: Enter moves into the job list".into(),
            ));
            return None;
        };
        if !matches!(
            view.state,
            State::Dead | State::Scheduled | State::Retrying | State::Recovered
        ) {
            let msg = format!(
                "job {} is {}: only dead, scheduled, retrying and recovered jobs can be retried",
                view.id,
                view.state.name()
            );
            self.status = Some(Status::Info(msg));
            return None;
        }
        Some(Action::Retry(Box::new(view.clone())))
    }
}

fn job_ref(v: &JobView) -> JobRef {
    JobRef {
        queue: v.queue.clone(),
        id: v.id.to_string(),
    }
}

/// The state `by` tabs away, wrapping around.
fn next_state(s: State, by: isize) -> State {
    let n = State::ALL.len() as isize;
    let i = State::ALL.iter().position(|x| *x == s).unwrap_or(0) as isize;
    State::ALL[(i + by).rem_euclid(n) as usize]
}

/// How many jobs a queue holds in a state.
pub fn count_of(s: &QueueStats, state: State) -> u64 {
    match state {
        State::Pending => s.pending,
        State::Scheduled => s.scheduled,
        State::Retrying => s.retrying,
        State::Recovered => s.recovered,
        State::Active => s.active,
        State::Dead => s.dead,
        _ => s.completed,
    }
}
