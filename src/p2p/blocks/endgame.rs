//! The endgame: the last blocks of a fetch are asked twice.
//!
//! Blocks go to providers in proportion to how fast each has been, but a fetch still ends
//! with whatever the slowest provider holds in flight: a congested or paced peer, one that
//! stalled but has not yet been cut off ([`super::fetch`] drops a silent provider only after
//! half the stall timeout). Once every block is asked (none pending), a provider with
//! nothing in flight is also asked for blocks in flight elsewhere, those whose owner will
//! take longest first; the first copy to arrive is kept and the other is dropped when it
//! comes (the protocol has no cancel: the loser's bytes are the endgame's cost, at most one
//! window per idle provider).
//!
//! A block is asked again only of a provider expected to deliver it in well under the time
//! its owner still needs (at least [`MIN_OWNER_SECS`]), so two equally fast providers do
//! not send each other's blocks twice. A LAN pull never turns to the WAN here: a WAN
//! provider is only asked again for a block no LAN provider holds.

use libp2p::PeerId;

/// An owner that will be done within this (from its measured rate, and how long it has
/// been silent) keeps its blocks.
pub(super) const MIN_OWNER_SECS: f64 = 1.0;

/// A block in flight at its owner, not asked twice yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Outstanding {
    pub slot: usize,
    pub index: u32,
    pub size: u32,
    pub owner: PeerId,
    /// Seconds the owner still needs for what it has in flight: from its rate (see
    /// [`super::rank::eta`]), or how long it has been silent, whichever is more.
    pub owner_eta: f64,
    /// Some LAN provider holds the block.
    pub lan_held: bool,
}

/// A provider with nothing in flight.
pub(super) struct Idle<'a> {
    pub peer: PeerId,
    pub lan: bool,
    /// Bytes it may have in flight.
    pub window: u64,
    /// Its rate, bytes/s (see [`super::rank::rate`]).
    pub rate: f64,
    /// Whether it holds the block at an index.
    pub has: &'a dyn Fn(u32) -> bool,
}

/// Which outstanding blocks to ask again, and of whom: for each idle provider, blocks it
/// holds, slowest owner first, up to its window (at least one).
pub(super) fn pick(mut outstanding: Vec<Outstanding>, idle: &[Idle<'_>]) -> Vec<(usize, PeerId)> {
    outstanding.sort_by(|a, b| b.owner_eta.total_cmp(&a.owner_eta));
    let mut taken = vec![false; outstanding.len()];
    let mut picks = Vec::new();
    for helper in idle {
        let mut asked = 0u64;
        for (k, o) in outstanding.iter().enumerate() {
            if taken[k] || o.owner == helper.peer || !(helper.has)(o.index) {
                continue;
            }
            if !helper.lan && o.lan_held {
                continue;
            }
            let helper_secs = (asked + u64::from(o.size)) as f64 / helper.rate.max(1.0);
            if o.owner_eta < MIN_OWNER_SECS || 2.0 * helper_secs > o.owner_eta {
                continue;
            }
            if asked > 0 && asked + u64::from(o.size) > helper.window {
                break;
            }
            taken[k] = true;
            asked += u64::from(o.size);
            picks.push((o.slot, helper.peer));
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(slot: usize, owner: PeerId, eta: f64, lan_held: bool) -> Outstanding {
        Outstanding {
            slot,
            index: slot as u32,
            size: 1 << 20,
            owner,
            owner_eta: eta,
            lan_held,
        }
    }

    #[test]
    fn the_slowest_owners_blocks_go_first_to_an_idle_provider_that_has_them() {
        let (slow, fast, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        let outstanding = vec![
            out(0, fast, 0.1, false),
            out(1, slow, 60.0, false),
            out(2, slow, 60.0, false),
            out(3, other, 5.0, false),
        ];
        let idle = [Idle {
            peer: fast,
            lan: true,
            window: 2 << 20,
            rate: 100e6,
            has: &all,
        }];
        // Its own block is not asked of it again; two blocks fit its window.
        assert_eq!(pick(outstanding, &idle), vec![(1, fast), (2, fast)]);
    }

    #[test]
    fn an_owner_about_to_finish_or_no_slower_than_the_helper_keeps_its_blocks() {
        let (owner, helper) = (PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        let outstanding = vec![
            out(0, owner, 0.5, false),
            out(1, owner, 1.5, false),
            out(2, owner, 30.0, false),
        ];
        // 1 MiB takes the helper 1 s: only the block whose owner needs 30 s is worth it.
        let idle = [Idle {
            peer: helper,
            lan: true,
            window: 64 << 20,
            rate: f64::from(1 << 20),
            has: &all,
        }];
        assert_eq!(pick(outstanding, &idle), vec![(2, helper)]);
    }

    #[test]
    fn a_wan_provider_is_not_asked_for_what_a_lan_provider_holds() {
        let (lan_owner, cloud) = (PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        let outstanding = vec![out(0, lan_owner, 9.0, true), out(1, lan_owner, 9.0, false)];
        let idle = [Idle {
            peer: cloud,
            lan: false,
            window: 64 << 20,
            rate: 1e6,
            has: &all,
        }];
        assert_eq!(pick(outstanding, &idle), vec![(1, cloud)]);
    }

    #[test]
    fn each_block_is_asked_twice_at_most_and_only_of_a_holder() {
        let (owner, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let odd = |i: u32| i % 2 == 1;
        let all = |_: u32| true;
        let outstanding = (0..4).map(|s| out(s, owner, 1.0, false)).collect();
        let idle = [
            Idle {
                peer: a,
                lan: true,
                window: 64 << 20,
                rate: 100e6,
                has: &odd,
            },
            Idle {
                peer: b,
                lan: true,
                window: 64 << 20,
                rate: 100e6,
                has: &all,
            },
        ];
        let mut picks = pick(outstanding, &idle);
        picks.sort_by_key(|p| p.0);
        assert_eq!(picks, vec![(0, b), (1, a), (2, b), (3, a)]);
    }
}
