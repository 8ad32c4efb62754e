//! Accounting of background tasks, so that reloads can be shown not to
//! leak them (the admin `/status` reports the count).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Live background tasks (health checks, key refreshes) in this process:
/// reloads must not leak them.
static BACKGROUND_TASKS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn background_tasks() -> usize {
    BACKGROUND_TASKS.load(Ordering::Relaxed)
}

/// Counts a task for as long as it lives, however it ends.
pub(crate) struct TaskGuard;

impl TaskGuard {
    pub(crate) fn new() -> Self {
        BACKGROUND_TASKS.fetch_add(1, Ordering::Relaxed);
        TaskGuard
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        BACKGROUND_TASKS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for TaskGuard {
    fn default() -> Self {
        Self::new()
    }
}
