//! Which ingress thread serves a new connection: the one serving the fewest.
//!
//! The ingress threads ([`crate::ingress::serve_on_threads`]) accept from one socket, and
//! whichever thread is awake takes the next connection. Left alone, a burst of connections
//! lands on one thread (measured: all 16 of a 16-connection client on one thread of two,
//! docs/BENCHMARKS.md), and since a connection never changes threads, a keep-alive peer
//! that opened its connections together is served by one core for their whole life while
//! the other idles: a signed load (one RSA verification per request) then caps at one
//! core. So the accepting thread counts the connection against the thread with the fewest
//! open ones ([`Placement::claim`]) and, when that is another thread, hands the socket over
//! ([`Arrival`]); the connection then lives on that thread as if accepted there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A connection accepted by one thread, to be served by another.
pub struct Arrival {
    /// The socket, out of the accepting thread's reactor.
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its slot under the connection limit.
    pub permit: OwnedSemaphorePermit,
    /// Its place in the serving thread's count.
    pub counted: Counted,
}

/// One thread's view of the placement: its own number, every thread's count of open
/// connections and every thread's inbox.
pub struct Placement {
    me: usize,
    open: Arc<[AtomicUsize]>,
    inboxes: Arc<[UnboundedSender<Arrival>]>,
}

/// A connection counted against a thread until dropped.
pub struct Counted {
    open: Arc<[AtomicUsize]>,
    thread: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Placement {
    /// The placements of `threads` threads, each with the receiving end of its inbox.
    pub fn for_threads(threads: usize) -> Vec<(Placement, UnboundedReceiver<Arrival>)> {
        let threads = threads.max(1);
        let open: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| unbounded_channel()).unzip();
        let inboxes: Arc<[UnboundedSender<Arrival>]> = senders.into();
        receivers
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| {
                let placement = Placement {
                    me,
                    open: Arc::clone(&open),
                    inboxes: Arc::clone(&inboxes),
                };
                (placement, inbox)
            })
            .collect()
    }

    /// This thread's number.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Picks the thread to serve a connection this thread just accepted and counts it
    /// there: the one with the fewest open connections, this one on a tie (no hand-over).
    pub fn claim(&self) -> (usize, Counted) {
        let counts: Vec<usize> = self
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let thread = least_loaded(&counts, self.me);
        self.open[thread].fetch_add(1, Ordering::Relaxed);
        let counted = Counted {
            open: Arc::clone(&self.open),
            thread,
        };
        (thread, counted)
    }

    /// Hands `arrival` to `thread`; gives it back if that thread no longer takes
    /// connections (it is shutting down), for the caller to serve or drop.
    pub fn hand_over(&self, thread: usize, arrival: Arrival) -> Result<(), Arrival> {
        match self.inboxes.get(thread) {
            Some(inbox) => inbox.send(arrival).map_err(|e| e.0),
            None => Err(arrival),
        }
    }
}

/// The thread with the fewest open connections in `counts`; `me` on a tie with it, else
/// the lowest-numbered of the least loaded.
fn least_loaded(counts: &[usize], me: usize) -> usize {
    let mine = counts.get(me).copied().unwrap_or(usize::MAX);
    counts
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n < mine)
        .min_by_key(|&(i, &n)| (n, i))
        .map_or(me, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_least_loaded_thread_wins_and_a_tie_stays_home() {
        assert_eq!(least_loaded(&[0, 0], 0), 0);
        assert_eq!(least_loaded(&[0, 0], 1), 1);
        assert_eq!(least_loaded(&[3, 1], 0), 1);
        assert_eq!(least_loaded(&[1, 3], 1), 0);
        assert_eq!(least_loaded(&[2, 1, 1, 0], 1), 3);
        assert_eq!(least_loaded(&[2, 1, 1], 0), 1);
        // A thread number out of range (never produced) still yields a real thread.
        assert_eq!(least_loaded(&[2, 1], 5), 1);
    }

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_evenly_and_closing_rebalances() {
        let placements = Placement::for_threads(2);
        let acceptor = &placements[0].0;
        let mut held: Vec<Counted> = Vec::new();
        let mut per_thread = [0usize; 2];
        for _ in 0..16 {
            let (thread, counted) = acceptor.claim();
            per_thread[thread] += 1;
            held.push(counted);
        }
        assert_eq!(per_thread, [8, 8]);
        // Close four of thread 1's: the next four connections all go there, even when
        // thread 0 accepts them.
        let mut kept = Vec::new();
        let mut closed = 0;
        for c in held {
            if c.thread == 1 && closed < 4 {
                closed += 1;
            } else {
                kept.push(c);
            }
        }
        for _ in 0..4 {
            let (thread, counted) = acceptor.claim();
            assert_eq!(thread, 1);
            kept.push(counted);
        }
        let counts: Vec<usize> = acceptor
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [8, 8]);
        drop(kept);
        assert!(acceptor.open.iter().all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[tokio::test]
    async fn a_handed_over_connection_arrives_in_the_other_threads_inbox() {
        let mut placements = Placement::for_threads(2);
        let (mut inbox_1, from_0) = {
            let (p1, inbox_1) = placements.pop().unwrap();
            drop(p1);
            let (p0, _inbox_0) = placements.pop().unwrap();
            (inbox_1, p0)
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        // Make thread 0 the busier one, so the claim goes to thread 1.
        let (_, _busy) = from_0.claim();
        let (thread, counted) = from_0.claim();
        assert_eq!(thread, 1);
        let sent = from_0.hand_over(
            thread,
            Arrival {
                stream,
                peer,
                permit,
                counted,
            },
        );
        assert!(sent.is_ok());
        let arrival = inbox_1.recv().await.unwrap();
        assert_eq!(arrival.peer, peer);
        assert_eq!(arrival.peer, client.local_addr().unwrap());
        // A thread whose inbox is gone gives the connection back.
        drop(inbox_1);
        let back = from_0.hand_over(1, arrival);
        assert!(back.is_err());
    }
}
