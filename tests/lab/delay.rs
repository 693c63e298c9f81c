//! The lab's WAN delay: this kernel has no `netem`, so the router holds every forwarded
//! packet for a fixed time in user space (docs/lab.md §2).
//!
//! `lab.sh wan-queue` sends every packet the `wan` namespace forwards to NFQUEUE 0 with
//! `--queue-bypass` (packets pass untouched while no program listens). [`run`], started
//! inside `wan`, binds queue 0 and accepts each packet `delay` after it arrived, in arrival
//! order (the delay is the same for all, so that is also deadline order). 20 ms each way is
//! a 40 ms round trip between an office and the cloud; the LAN is not touched.
//!
//! Only packet headers are copied to user space (the verdict does not need the payload), and
//! GSO super-packets are taken as they are, so the delayer keeps up with the 10 Mbit/s links.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// Holds every packet of queue 0 for `delay`, forever (until killed).
pub fn run(delay: Duration) -> std::io::Result<()> {
    let mut queue = nfq::Queue::open()?;
    queue.bind(0)?;
    queue.set_copy_range(0, 64)?;
    queue.set_recv_gso(0, true)?;
    queue.set_queue_max_len(0, 8192)?;
    // If we fall behind, pass packets rather than drop them.
    queue.set_fail_open(0, true)?;
    queue.set_nonblocking(true);
    println!("delaying forwarded packets by {delay:?}");
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        let mut got = false;
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(nfq::Verdict::Accept);
                    held.push_back((Instant::now() + delay, msg));
                    got = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, msg)) = held.pop_front() {
                queue.verdict(msg)?;
            }
        }
        if !got {
            // Nothing arrived: sleep until the next packet is due, at most 1 ms (the delay's
            // precision), so new packets are picked up promptly too.
            let next = held.front().map_or(Duration::from_millis(1), |(at, _)| {
                at.saturating_duration_since(now)
            });
            std::thread::sleep(next.min(Duration::from_millis(1)));
        }
    }
}
