//! Choosing who sends a block: LAN before WAN, then the provider expected to deliver it
//! soonest; and, for blocks several LAN peers are fetching at once, which of them fetches
//! it over the WAN.
//!
//! These are pure functions over what the fetcher knows (see [`super::fetch`]), so the
//! rules can be read and tested on their own.

use std::time::Duration;

use libp2p::PeerId;

use crate::content::BlockHash;

/// A connected peer as the node sees it (published by the node's task for fetches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub peer: PeerId,
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
}
