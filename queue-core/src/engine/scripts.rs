//! The engine's scripts: `scripts/*.lua` decide a job's life (one script per state change),
//! `scripts/admin/` holds the operator actions and `scripts/cron/` the tick. Each file's header
//! documents its KEYS and ARGV.

crate::script::scripts! {
    /// The engine's scripts, compiled into the binary once.
    pub(crate) fn scripts() -> Scripts {
        enqueue => ["scripts/enqueue.lua"],
        fetch => ["scripts/fetch.lua"],
        complete => ["scripts/complete.lua"],
        fail => ["scripts/fail.lua"],
        reclaim => ["scripts/reclaim.lua"],
        extend => ["scripts/extend.lua"],
        requeue => ["scripts/requeue.lua"],
        watch => ["scripts/watch.lua"],
        replay => ["scripts/admin/replay.lua"],
        locate => ["scripts/admin/locate.lua"],
        delete => ["scripts/admin/delete.lua"],
        promote => ["scripts/admin/promote.lua"],
        purge => ["scripts/admin/purge.lua"],
        trim => ["scripts/admin/trim.lua"],
        cron_fire => ["scripts/cron/fire.lua"],
    }
}
