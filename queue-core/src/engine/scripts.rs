//! The engine's scripts: `scripts/*.lua` decide a job's life (one script per state change),
//! `scripts/admin/` holds the operator actions, `scripts/cron/` the tick, and `scripts/lib/`
//! the Lua shared by several scripts (put in front of them). Each file's header
//! documents its KEYS and ARGV.

crate::script::scripts! {
    /// The engine's scripts, compiled into the binary once.
    pub(crate) fn scripts() -> Scripts {
        enqueue => ["scripts/lib/enqueue_jobs.lua", "scripts/enqueue.lua"],
        fetch => ["scripts/fetch.lua"],
        complete => ["scripts/complete.lua"],
        // One script per failure action, sharing the lease check.
        retry => ["scripts/lib/settle.lua", "scripts/retry.lua"],
        dead => ["scripts/lib/settle.lua", "scripts/dead.lua"],
        discard => ["scripts/lib/settle.lua", "scripts/discard.lua"],
        snooze => ["scripts/lib/settle.lua", "scripts/snooze.lua"],
        // The heartbeat: extends the caller's leases and takes over expired ones.
        beat => ["scripts/beat.lua"],
        redeem => ["scripts/redeem.lua"],
        requeue => ["scripts/requeue.lua"],
        watch => ["scripts/watch.lua"],
        // The metrics history, sent with the heartbeat.
        record => ["scripts/record.lua"],
        replay => ["scripts/admin/replay.lua"],
        locate => ["scripts/admin/locate.lua"],
        delete => ["scripts/admin/delete.lua"],
        promote => ["scripts/admin/promote.lua"],
        purge => ["scripts/admin/purge.lua"],
        trim => ["scripts/admin/trim.lua"],
        // A tick is enqueued by the same Lua as any job.
        cron_fire => ["scripts/lib/enqueue_jobs.lua", "scripts/cron/fire.lua"],
    }
}
