//! The recorder's queue: requests put records in, the writer thread takes them out in batches.
//!
//! Why not a channel: a channel wakes the writer for every record it sends while the writer
//! sleeps, and on a busy proxy that is a thread wake-up (a futex call, a context switch, and
//! then a `write` for a batch of one) per request, taken from the cores that serve requests.
//! Here the writer dwells until [`DWELL`] after it took its last batch: records nobody waits for
//! that arrive meanwhile are queued without waking it, and it takes them all when the dwell
//! ends. While requests keep coming at least once per [`DWELL`] (any load, and one request at a
//! time from a busy agent), the writer wakes at most once per [`DWELL`] whatever the rate, and
//! no request pays for a wake-up. After a quiet spell the writer sleeps, and the first record
//! wakes it, as a channel would; that record then costs a second wake-up, the dwell's end,
//! which only a quiet proxy pays. A record somebody waits for (a refusal's, a write's, an
//! approval's, the closing one) wakes it at once, whatever it is doing, so durability never
//! waits for the dwell; nor does a batch that has grown to its bound, so the dwell never makes
//! admission wait for room.
//!
//! What dwells is a record not yet acknowledged to anyone (the record of a read, written after
//! its response): a crash of the process can lose those queued in the last [`DWELL`] (more
//! while a slow disk holds the writer in a write or sync, as any queue would), and a crash of
//! the machine could lose more, as it always could before they were synced.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long after taking a batch the writer waits for more records: at most one wake-up per
/// this long under load, and the longest a record nobody waits for is kept from a writer that
/// is free to write it.
pub(super) const DWELL: Duration = Duration::from_millis(1);

/// What the writer is doing, as the senders see it: whether a new record must wake it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Asleep with nothing queued: any record wakes it.
    Idle,
    /// Dwelling after a write: only an urgent record, or a batch at its bound, wakes it.
    Dwelling,
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
    /// A batch this long wakes a dwelling writer.
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
            Writer::Dwelling => q.urgent || q.items.len() >= self.full,
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

    /// The writer's side: dwell until `dwell_until` (if given) while nothing urgent and no full
    /// batch waits, then wait for at least one item (or until `idle_until`, if given, leaving
    /// `batch` empty), and move every item into `batch` (which must be empty), in the order
    /// they were sent.
    pub(super) fn take(
        &self,
        batch: &mut Vec<T>,
        dwell_until: Option<Instant>,
        idle_until: Option<Instant>,
    ) {
        let mut q = self.lock();
        if let Some(until) = dwell_until {
            while !q.urgent && q.items.len() < self.full {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                q.writer = Writer::Dwelling;
                q = match self.wake.wait_timeout(q, left) {
                    Ok((q, _)) => q,
                    Err(p) => p.into_inner().0,
                };
            }
        }
        while q.items.is_empty() {
            q.writer = Writer::Idle;
            q = match idle_until {
                None => self.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        q.writer = Writer::Busy;
                        return;
                    }
                    match self.wake.wait_timeout(q, left) {
                        Ok((q, _)) => q,
                        Err(p) => p.into_inner().0,
                    }
                }
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
    fn an_urgent_item_is_taken_without_dwelling_and_order_is_kept() {
        let inbox = Arc::new(Inbox::new(1000));
        let writer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 3 {
                    let mut batch = Vec::new();
                    inbox.take(
                        &mut batch,
                        Some(Instant::now() + Duration::from_secs(60)),
                        None,
                    );
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

    /// Waits until the writer thread dwells.
    fn until_dwelling<T>(inbox: &Inbox<T>) {
        while inbox.lock().writer != Writer::Dwelling {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_dwelling_writer_is_woken_only_by_an_urgent_item_or_a_full_batch() {
        let inbox = Arc::new(Inbox::new(3));
        let writer = {
            let inbox = Arc::clone(&inbox);
            std::thread::spawn(move || {
                let mut batches = Vec::new();
                for _ in 0..2 {
                    let mut batch = Vec::new();
                    inbox.take(
                        &mut batch,
                        Some(Instant::now() + Duration::from_secs(3600)),
                        None,
                    );
                    batches.push(batch);
                }
                batches
            })
        };
        until_dwelling(&inbox);
        inbox.send(1, false).unwrap();
        // The send did not wake it: a request path that pays no wake-up.
        assert!(inbox.lock().writer == Writer::Dwelling);
        inbox.send(2, true).unwrap();
        until_dwelling(&inbox);
        inbox.send(3, false).unwrap();
        inbox.send(4, false).unwrap();
        assert!(inbox.lock().writer == Writer::Dwelling);
        inbox.send(5, false).unwrap();
        // An hour's dwell, cut short both times: by the urgent item, then by the full batch.
        assert_eq!(writer.join().unwrap(), vec![vec![1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn items_queued_before_a_dwell_ends_are_taken_when_it_ends() {
        let inbox = Inbox::new(100);
        // Queued while the writer is busy (writing the batch before): nobody is woken.
        inbox.send(1, false).unwrap();
        inbox.send(2, false).unwrap();
        let started = Instant::now();
        let mut batch = Vec::new();
        inbox.take(&mut batch, Some(started + Duration::from_millis(20)), None);
        assert_eq!(batch, vec![1, 2]);
        assert!(started.elapsed() >= Duration::from_millis(20), "it dwelt");
    }

    #[test]
    fn a_closed_inbox_refuses_items() {
        let inbox = Inbox::new(4);
        inbox.close();
        assert!(inbox.send(1, true).is_err());
    }
}
