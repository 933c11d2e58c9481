//! The recorder's queue: requests put records in, the writer thread takes them out in batches.
//!
//! Why not a channel: a channel wakes the writer for every record it sends while the writer
//! sleeps, and on a busy proxy that is a thread wake-up (a futex call, a context switch, and
//! then a `write` and a flush for a batch of one) per request. Here the writer, once woken for
//! a record nobody waits for, may linger for up to [`LINGER`] so that the records of the
//! requests around it share its wake-up, its write and its flush. It lingers only when the
//! last batch held more than one record (requests are arriving faster than one per write):
//! with one request at a time, lingering would add a second wake-up (the timeout) to every
//! record instead of saving one. A record somebody waits for (a refusal's or an approval's,
//! the closing one) wakes it at once, whatever it is doing, so waiting for durability never
//! costs the linger; nor does a batch that has grown to its bound.
//!
//! What lingers is a record not yet acknowledged to anyone: a crash can lose it, as it could
//! before, a few hundred microseconds later than before at most.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the writer waits for more records after the first one nobody waits for.
pub(super) const LINGER: Duration = Duration::from_micros(500);

/// What the writer is doing, as the senders see it: whether a new record must wake it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Asleep with nothing queued: any record wakes it.
    Idle,
    /// Lingering: only an urgent record, or a batch at its bound, wakes it.
    Lingering,
    /// Awake (or already being woken): nobody needs to wake it.
    Busy,
}

struct Queue<T> {
    items: Vec<T>,
    urgent: bool,
    writer: Writer,
    /// The writer has stopped: nothing more is taken.
    gone: bool,
}

/// A queue with one consumer that batches.
pub(super) struct Inbox<T> {
    queue: Mutex<Queue<T>>,
    wake: Condvar,
    /// A batch this long wakes a lingering writer.
    full: usize,
}

/// The queue's consumer has stopped.
#[derive(Debug)]
pub(super) struct Gone;

impl<T> Inbox<T> {
    /// An inbox whose writer is woken early once `full` items wait.
    pub(super) fn new(full: usize) -> Self {
        Inbox {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                urgent: false,
                writer: Writer::Busy,
                gone: false,
            }),
            wake: Condvar::new(),
            full: full.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // A panic while the lock was held left the queue consistent (every change is one
        // push or one swap), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an item; `urgent` when somebody waits for it to be written.
    pub(super) fn send(&self, item: T, urgent: bool) -> Result<(), Gone> {
        let mut q = self.lock();
        if q.gone {
            return Err(Gone);
        }
        q.items.push(item);
        q.urgent |= urgent;
        let wake = match q.writer {
            Writer::Idle => true,
            Writer::Lingering => q.urgent || q.items.len() >= self.full,
            Writer::Busy => false,
        };
        if wake {
            q.writer = Writer::Busy;
        }
        drop(q);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The writer's side: wait for items, linger (if `linger`) while none is urgent, and move
    /// them all into `batch` (which must be empty), in the order they were sent.
    pub(super) fn take(&self, batch: &mut Vec<T>, linger: bool) {
        let mut q = self.lock();
        while q.items.is_empty() {
            q.writer = Writer::Idle;
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        let until = Instant::now() + LINGER;
        while linger && !q.urgent && q.items.len() < self.full {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q.writer = Writer::Lingering;
            q = match self.wake.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
        q.writer = Writer::Busy;
        q.urgent = false;
        std::mem::swap(&mut q.items, batch);
    }

    /// The writer has stopped: later sends fail, and what is queued is dropped, so whoever
    /// waits for one of those items learns that it will never be written.
    pub(super) fn close(&self) {
        let mut q = self.lock();
        q.gone = true;
        let items = std::mem::take(&mut q.items);
        drop(q);
        drop(items);
    }
}

/// Closes an inbox when dropped: the writer thread holds one, so a panic in it still closes.
pub(super) struct CloseOnDrop<'a, T>(pub(super) &'a Inbox<T>);

impl<T> Drop for CloseOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_urgent_item_is_taken_without_lingering_and_order_is_kept() {
        let inbox = Arc::new(Inbox::new(1000));
        let writer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 3 {
                    let mut batch = Vec::new();
                    inbox.take(&mut batch, true);
                    got.extend(batch);
                }
                got
            })
        };
        inbox.send(1, false).unwrap();
        inbox.send(2, false).unwrap();
        inbox.send(3, true).unwrap();
        assert_eq!(writer.join().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_closed_inbox_refuses_items() {
        let inbox = Inbox::new(4);
        inbox.close();
        assert!(inbox.send(1, true).is_err());
    }
}
