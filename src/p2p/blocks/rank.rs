//! Choosing who sends a block: LAN before WAN, then the provider expected to deliver it
//! soonest; how many bytes each provider may have in flight (its window, from its measured
//! bandwidth × delay); and, for blocks several LAN peers are fetching at once, which of
//! them fetches it over the WAN.
//!
//! These are pure functions over what the fetcher knows (see [`super::fetch`]), so the
//! rules can be read and tested on their own.

use std::time::Duration;

use libp2p::PeerId;

use crate::content::BlockHash;

/// A peer as the node sees it (published by the node's task for fetches): every connected
/// peer, and a LAN peer being dialled since mDNS found it (a fetch waits a moment for it
/// rather than ask the WAN for what it may hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub peer: PeerId,
    /// Connected now (false: a LAN peer still being dialled).
    pub connected: bool,
    /// LAN (see the module docs of [`super`] for the rule).
    pub lan: bool,
    /// Its latest ping round trip.
    pub rtt: Option<Duration>,
}

/// The rate assumed for a provider nothing was received from yet, at zero RTT (bytes/s).
const PRIOR_RATE: f64 = 100e6;
/// Bytes received from a provider before its measured rate replaces the prior.
pub const MEASURE_AFTER: u64 = 1 << 20;

/// A provider's expected rate in bytes per second: its measured throughput once it has sent
/// [`MEASURE_AFTER`] bytes, before that a prior that falls with its ping RTT (a 1 ms peer
/// counts as half as fast as a 0 ms one, a 100 ms one as 1/101), so RTT decides until
/// throughput is known.
pub fn rate(received: u64, busy: Duration, rtt: Option<Duration>) -> f64 {
    if received >= MEASURE_AFTER && !busy.is_zero() {
        return received as f64 / busy.as_secs_f64();
    }
    let rtt_ms = rtt.map_or(50.0, |r| r.as_secs_f64() * 1e3);
    PRIOR_RATE / (1.0 + rtt_ms)
}

/// Seconds until a provider with `queued` bytes in flight at `rate` would deliver `size`
/// more: the provider with the lowest value gets the block.
pub fn eta(queued: u64, size: u32, rate: f64) -> f64 {
    (queued + u64::from(size)) as f64 / rate.max(1.0)
}

/// A window holds this many times a provider's bandwidth × delay: one to keep its link busy
/// for the delay, one more so it never drains while the next asks travel and a batch of
/// blocks is staged (a block counts against the window until it is staged).
pub const WINDOW_BDPS: f64 = 2.0;
/// The smallest measured window: two large blocks, so that one can arrive while the other
/// is stored.
pub const WINDOW_FLOOR: u64 = 2 << 20;

/// A WAN provider's window once its rate (bytes/s) and delay (the shortest time seen from
/// a `Get` to its block staged) are measured: [`WINDOW_BDPS`] × rate × delay, at least
/// [`WINDOW_FLOOR`], at most `cap` (the configured window, which bounds memory). A fixed
/// window on a slow link holds seconds of bytes: what a co-fetching office pays twice, and
/// what the endgame waits for. (Why not on the LAN: see `fetch`'s `Provider::window`.)
pub fn window(rate: f64, delay: Duration, cap: u64) -> u64 {
    let bdp = WINDOW_BDPS * rate.max(0.0) * delay.as_secs_f64();
    (bdp.min(cap as f64) as u64).clamp(WINDOW_FLOOR.min(cap), cap)
}

/// Which of `nodes` (ourselves and the LAN peers fetching the block too) fetches `block`
/// over the WAN: the lowest `BLAKE3(block ‖ peer id)` (rendezvous hashing). Every node that
/// sees the same set computes the same owner, and the blocks of a file spread evenly over
/// the set.
pub fn owner<'a>(block: &BlockHash, nodes: impl IntoIterator<Item = &'a PeerId>) -> Option<PeerId> {
    nodes
        .into_iter()
        .map(|p| {
            let mut h = blake3::Hasher::new();
            h.update(&block.0);
            h.update(&p.to_bytes());
            (*h.finalize().as_bytes(), *p)
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_agreed_and_the_work_is_split() {
        let a = PeerId::random();
        let b = PeerId::random();
        let mut mine = 0;
        for i in 0..1000u32 {
            let h = BlockHash::of(&i.to_be_bytes());
            let o1 = owner(&h, [&a, &b]);
            let o2 = owner(&h, [&b, &a]);
            assert_eq!(o1, o2);
            if o1 == Some(a) {
                mine += 1;
            }
        }
        // Binomial(1000, 1/2): outside 400..600 with probability < 1e-9.
        assert!((400..600).contains(&mine), "{mine}");
        assert_eq!(owner(&BlockHash::of(b"x"), []), None);
    }

    #[test]
    fn rtt_ranks_until_throughput_is_known() {
        let near = rate(0, Duration::ZERO, Some(Duration::from_micros(200)));
        let far = rate(0, Duration::ZERO, Some(Duration::from_millis(40)));
        assert!(near > far);
        // Measured: 10 MB in 1 s, whatever the RTT.
        let measured = rate(10_000_000, Duration::from_secs(1), Some(Duration::ZERO));
        assert!((measured - 1e7).abs() < 1.0);
        // A provider with more queued finishes later at the same rate.
        assert!(eta(0, 1000, near) < eta(1 << 20, 1000, near));
    }

    #[test]
    fn a_window_is_twice_the_bandwidth_delay_product_within_its_bounds() {
        let ms = Duration::from_millis;
        // The lab's WAN: 1.19 MB/s, ~0.9 s from a Get to a 1 MiB block stored.
        let lab_wan = window(1.19e6, ms(900), 4 << 20);
        assert!((2_141_000..2_143_000).contains(&lab_wan), "{lab_wan}");
        // A 100 Mbit/s WAN at 40 ms plus a 1 MiB block's 84 ms: 3.1 MB, under 4 MiB.
        let fast_wan = window(12.5e6, ms(124), 4 << 20);
        assert!((3_099_000..3_101_000).contains(&fast_wan), "{fast_wan}");
        // A fat long link is held to the cap; a slow short one gets the floor.
        assert_eq!(window(100e6, ms(200), 4 << 20), 4 << 20);
        assert_eq!(window(1e5, ms(5), 16 << 20), WINDOW_FLOOR);
        // A cap below the floor wins; nonsense in gives the floor.
        assert_eq!(window(1e9, ms(100), 1 << 20), 1 << 20);
        assert_eq!(window(-1.0, ms(10), 4 << 20), WINDOW_FLOOR);
        assert_eq!(window(f64::NAN, ms(10), 4 << 20), WINDOW_FLOOR);
    }
}
