//! The endgame: the last blocks of a fetch are asked of a second provider.
//!
//! Blocks go to providers in proportion to how fast each has been, but a fetch still ends
//! with whatever its slowest provider holds in flight: a provider on a congested link or
//! behind its own upload limit can hold a whole window (16 MiB on the LAN) while the others
//! sit idle, and one that stopped answering is cut off only after half the stall timeout.
//! So once every block is asked (none pending), a provider with nothing in flight is also
//! asked for blocks in flight elsewhere; the first copy to arrive is stored and the other
//! is cancelled, or dropped if it comes anyway, neither stored again nor counted as an error
//! ([`super::fetch`] does that bookkeeping; this file only chooses).
//!
//! Which blocks: only those of an owner the helper is expected to beat. The losing copy is
//! cancelled (`Cancel`, see [`super::wire`]), but a provider answers in request order and
//! cannot take back a block it started sending, so what is already on its way still
//! crosses; doubling between two providers of the same speed would only add traffic. So a
//! helper takes an owner's blocks only if it is at least [`FASTER`] times as fast, and then
//! from the back of the owner's queue (the block asked last first), as long as it would
//! deliver the block sooner than the owner reaches it: a provider answers in request order,
//! so the owner sends its earliest blocks while the helper sends the latest, and the two
//! meet in the middle instead of racing for the same block. Slowest owner first; each block
//! is asked twice at most, and a helper gets at most its window (at least one block).
//!
//! A LAN pull never trickles over the WAN: a WAN provider is asked again only for a block
//! no LAN provider that is still answering holds (a LAN owner that went quiet, see
//! [`Outstanding::lan_held`], no longer counts).

use std::collections::HashMap;

use libp2p::PeerId;

/// How much faster than an owner a helper must be expected to be before it is asked for the
/// owner's blocks.
pub const FASTER: f64 = 2.0;

/// A block in flight at its owner and not asked twice yet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Outstanding {
    /// The fetch's slot for it.
    pub slot: usize,
    /// Its index in the manifest.
    pub index: u32,
    pub size: u32,
    pub owner: PeerId,
    /// When it was asked, in the fetch's order of asks (later asks have larger numbers).
    pub asked: u64,
    /// A LAN provider that is still answering holds it: no WAN provider may be asked.
    pub lan_held: bool,
}

/// A provider with nothing in flight.
pub(super) struct Idle<'a> {
    pub peer: PeerId,
    pub lan: bool,
    /// Bytes per second it is expected to deliver.
    pub rate: f64,
    /// Bytes it may have in flight.
    pub window: u64,
    /// Whether it holds the block at an index.
    pub has: &'a dyn Fn(u32) -> bool,
}

/// A block with the seconds its owner needs to reach it (everything asked of the owner
/// before it, and itself, at the owner's rate).
struct Queued {
    o: Outstanding,
    owner_rate: f64,
    reached_in: f64,
}

/// Which outstanding blocks to ask again, and of whom (see the module docs): `owner_rate`
/// gives each owner's expected bytes per second.
pub(super) fn pick(
    outstanding: Vec<Outstanding>,
    owner_rate: &HashMap<PeerId, f64>,
    idle: &[Idle<'_>],
) -> Vec<(usize, PeerId)> {
    let mut by_owner: HashMap<PeerId, Vec<Outstanding>> = HashMap::new();
    for o in outstanding {
        by_owner.entry(o.owner).or_default().push(o);
    }
    let mut queued: Vec<Queued> = Vec::new();
    for (owner, mut blocks) in by_owner {
        let rate = owner_rate.get(&owner).copied().unwrap_or(1.0).max(1.0);
        blocks.sort_by_key(|o| o.asked);
        let mut ahead = 0u64;
        for o in blocks {
            ahead += u64::from(o.size);
            queued.push(Queued {
                o,
                owner_rate: rate,
                reached_in: ahead as f64 / rate,
            });
        }
    }
    // The owner that needs longest for its last block first; of each owner, the block asked
    // last first.
    queued.sort_by(|a, b| b.reached_in.total_cmp(&a.reached_in));
    let mut taken = vec![false; queued.len()];
    let mut picks = Vec::new();
    for helper in idle {
        let mut asked = 0u64;
        for (k, q) in queued.iter().enumerate() {
            let o = &q.o;
            if taken[k] || o.owner == helper.peer || !(helper.has)(o.index) {
                continue;
            }
            if (!helper.lan && o.lan_held) || helper.rate < FASTER * q.owner_rate {
                continue;
            }
            let next = asked + u64::from(o.size);
            if asked > 0 && next > helper.window {
                break;
            }
            // Past the middle: the owner reaches this block first.
            if next as f64 / helper.rate.max(1.0) >= q.reached_in {
                continue;
            }
            taken[k] = true;
            asked = next;
            picks.push((o.slot, helper.peer));
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    fn out(slot: usize, owner: PeerId, lan_held: bool) -> Outstanding {
        Outstanding {
            slot,
            index: slot as u32,
            size: 1 << 20,
            owner,
            asked: slot as u64,
            lan_held,
        }
    }

    fn idle<'a>(peer: PeerId, lan: bool, rate: f64, has: &'a dyn Fn(u32) -> bool) -> Idle<'a> {
        Idle {
            peer,
            lan,
            rate,
            window: 64 << 20,
            has,
        }
    }

    #[test]
    fn the_slowest_owners_last_asked_blocks_go_first_up_to_the_window() {
        let (slow, fast, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        let outstanding = vec![
            out(0, fast, true),
            out(1, slow, true),
            out(2, slow, true),
            out(3, slow, true),
            out(4, other, true),
        ];
        let rates = HashMap::from([(slow, 0.1 * MB), (other, 1.0 * MB), (fast, 100.0 * MB)]);
        // Its own block is never asked of it again; two blocks fit its window: the slow
        // owner's last two, latest first.
        let mut helper = idle(fast, true, 100.0 * MB, &all);
        helper.window = 2 << 20;
        assert_eq!(
            pick(outstanding.clone(), &rates, &[helper]),
            vec![(3, fast), (2, fast)]
        );
        // A larger window also takes the slow owner's first block, then the next slowest
        // owner's.
        let helper = idle(fast, true, 100.0 * MB, &all);
        assert_eq!(
            pick(outstanding, &rates, &[helper]),
            vec![(3, fast), (2, fast), (1, fast), (4, fast)]
        );
    }

    #[test]
    fn a_provider_not_much_faster_than_the_owner_is_not_asked() {
        let (owner, helper) = (PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        let outstanding: Vec<Outstanding> = (0..16).map(|s| out(s, owner, true)).collect();
        let rates = HashMap::from([(owner, 50.0 * MB)]);
        let same = [idle(helper, true, 60.0 * MB, &all)];
        assert_eq!(pick(outstanding.clone(), &rates, &same), vec![]);
        // Four times as fast: it takes the back of the queue until the owner would reach a
        // block first (16 blocks at 1 : 4: the owner sends 3 while the helper sends 13).
        let faster = [idle(helper, true, 200.0 * MB, &all)];
        let picks = pick(outstanding, &rates, &faster);
        assert_eq!(
            picks,
            (3..16).rev().map(|s| (s, helper)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_wan_provider_is_asked_only_for_what_no_answering_lan_provider_holds() {
        let (lan_owner, cloud, office) = (PeerId::random(), PeerId::random(), PeerId::random());
        let all = |_: u32| true;
        // Block 0: a LAN provider holds it and answers. Block 1: no LAN provider holds it
        // (or the LAN owner went quiet).
        let outstanding = vec![out(0, lan_owner, true), out(1, lan_owner, false)];
        let rates = HashMap::from([(lan_owner, 0.01 * MB)]);
        let wan = [idle(cloud, false, 1.0 * MB, &all)];
        assert_eq!(pick(outstanding.clone(), &rates, &wan), vec![(1, cloud)]);
        // A LAN helper may take either.
        let lan = [idle(office, true, 1.0 * MB, &all)];
        assert_eq!(
            pick(outstanding, &rates, &lan),
            vec![(1, office), (0, office)]
        );
    }

    #[test]
    fn each_block_is_asked_twice_at_most_and_only_of_a_holder() {
        let (owner, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let odd = |i: u32| i % 2 == 1;
        let all = |_: u32| true;
        let outstanding = (0..4).map(|s| out(s, owner, false)).collect();
        let rates = HashMap::from([(owner, 0.01 * MB)]);
        let helpers = [idle(a, true, MB, &odd), idle(b, true, MB, &all)];
        let mut picks = pick(outstanding, &rates, &helpers);
        picks.sort_by_key(|p| p.0);
        assert_eq!(picks, vec![(0, b), (1, a), (2, b), (3, a)]);
    }
}
