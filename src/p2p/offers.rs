//! Libraries that peers offer, waiting for someone to approve them.
//!
//! A peer offers a library when its copy lists this device as a member. Anyone who reaches
//! the swarm's port can create a library, add this device to it and offer it, so no role
//! joins on its own: the offer is written down here and waits for a person, who approves
//! or refuses it with `harpbridge offers accept|reject` (`node`, `cache`) or in the panel
//! (`serve`, which must also be told the Nextcloud folder to put it in).
//!
//! The running process and the command line share two small JSON files in the data
//! directory, each with one writer, so that neither can lose the other's update:
//!
//! - [`OFFERS_FILE`]: what was offered, by whom and when; written by the running process.
//! - [`DECISIONS_FILE`]: the libraries accepted and refused; written by
//!   `harpbridge offers accept|reject` (and the panel). The running process re-reads it
//!   when it changes ([`OfferBook::reload`]) and joins what was accepted.
//!
//! Both are written atomically (temporary file, then rename) and readable by the owner
//! only. At most [`MAX_OFFERS`] libraries, each with [`MAX_PEERS`] peers, are remembered:
//! a hostile peer can make up any number of libraries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::{NodeEvent, NodeHandle};
use crate::chain::LibraryId;
use crate::owner_only::{read_json, write_json};

/// What was offered (written by the running process).
pub const OFFERS_FILE: &str = "offers.json";
/// What was decided (written by `harpbridge offers accept|reject` and the panel).
pub const DECISIONS_FILE: &str = "offer-decisions.json";
/// Libraries remembered as offered, at most; the oldest offer is forgotten first.
pub const MAX_OFFERS: usize = 64;
/// Peers remembered per offer, at most.
pub const MAX_PEERS: usize = 8;
/// How often a running node looks for new decisions.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Either file larger than this is not read (each holds a few short rows).
const MAX_FILE_LEN: u64 = 1 << 20;

/// One offered library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The library id (32 hex characters).
    pub library: String,
    /// The PeerIds that offered it.
    pub peers: Vec<String>,
    /// When it was first and last offered, ms since the epoch.
    pub first_ms: u64,
    pub last_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OffersFile {
    offers: Vec<Offer>,
}

/// The libraries accepted and refused.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    /// Join these when offered.
    pub accepted: BTreeSet<String>,
    /// Never join these.
    pub rejected: BTreeSet<String>,
}

impl Decisions {
    /// What was decided for `library`, if anything.
    pub fn of(&self, library: &LibraryId) -> Option<bool> {
        let key = library.to_hex();
        if self.accepted.contains(&key) {
            Some(true)
        } else if self.rejected.contains(&key) {
            Some(false)
        } else {
            None
        }
    }
}

/// What to do with an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: join it.
    Join,
    /// Refused: ignore it.
    Ignore,
    /// Not decided; `new` when this library (or this peer for it) was not on record yet,
    /// so it is worth telling someone.
    Wait { new: bool },
}

/// The running process's record of offers and decisions.
#[derive(Debug)]
pub struct OfferBook {
    dir: PathBuf,
    offers: BTreeMap<LibraryId, Offer>,
    decisions: Decisions,
    /// The decisions file's mtime when last read.
    decisions_seen: Option<SystemTime>,
}

impl OfferBook {
    /// Reads the data directory's offers and decisions (a missing or unreadable file is an
    /// empty one; a damaged one is logged).
    pub fn open(dir: &Path) -> OfferBook {
        let offers = read_json::<OffersFile>(&dir.join(OFFERS_FILE), MAX_FILE_LEN)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the offers file");
                OffersFile::default()
            })
            .offers
            .into_iter()
            .filter_map(|o| Some((o.library.parse().ok()?, o)))
            .collect();
        let mut book = OfferBook {
            dir: dir.to_path_buf(),
            offers,
            decisions: Decisions::default(),
            decisions_seen: None,
        };
        book.reload();
        book
    }

    /// Records that `peer` offers `library` and says what to do with it.
    pub fn offered(&mut self, peer: &PeerId, library: LibraryId) -> Verdict {
        match self.decisions.of(&library) {
            Some(true) => return Verdict::Join,
            Some(false) => return Verdict::Ignore,
            None => {}
        }
        let now = crate::clock::now_ms();
        let peer = peer.to_base58();
        let offer = self.offers.entry(library).or_insert_with(|| Offer {
            library: library.to_hex(),
            peers: Vec::new(),
            first_ms: now,
            last_ms: now,
        });
        offer.last_ms = now;
        let new = !offer.peers.contains(&peer);
        if new && offer.peers.len() < MAX_PEERS {
            offer.peers.push(peer);
        }
        if self.offers.len() > MAX_OFFERS {
            let oldest = self
                .offers
                .iter()
                .min_by_key(|(_, o)| o.last_ms)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.offers.remove(&id);
            }
        }
        if new {
            self.save();
        }
        Verdict::Wait { new }
    }

    /// `library` is held now: it is no longer an offer.
    pub fn held(&mut self, library: &LibraryId) {
        if self.offers.remove(library).is_some() {
            self.save();
        }
    }

    /// Re-reads the decisions if their file changed, and returns the offered libraries
    /// accepted since.
    pub fn reload(&mut self) -> Vec<LibraryId> {
        let path = self.dir.join(DECISIONS_FILE);
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if stamp.is_some() && stamp == self.decisions_seen {
            return Vec::new();
        }
        self.decisions_seen = stamp;
        let before = self.decisions.clone();
        self.decisions = read_json(&path, MAX_FILE_LEN).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the offer decisions file");
            Decisions::default()
        });
        self.offers
            .keys()
            .filter(|id| self.decisions.of(id) == Some(true) && before.of(id) != Some(true))
            .copied()
            .collect()
    }

    /// The offers nobody decided on yet, oldest first.
    pub fn pending(&self) -> Vec<Offer> {
        let mut out: Vec<Offer> = self
            .offers
            .iter()
            .filter(|(id, _)| self.decisions.of(id).is_none())
            .map(|(_, o)| o.clone())
            .collect();
        out.sort_by_key(|o| o.first_ms);
        out
    }

    /// The offers not refused, oldest first (`serve` lists these: an offer accepted on the
    /// command line still needs a folder there).
    pub fn not_refused(&self) -> Vec<Offer> {
        let mut out: Vec<Offer> = self
            .offers
            .iter()
            .filter(|(id, _)| self.decisions.of(id) != Some(false))
            .map(|(_, o)| o.clone())
            .collect();
        out.sort_by_key(|o| o.first_ms);
        out
    }

    /// Records a decision made in this process (the panel): writes the decisions file.
    pub fn decide(&mut self, library: LibraryId, accept: bool) -> std::io::Result<()> {
        decide(&self.dir, library, accept)?;
        self.decisions = read_decisions(&self.dir)?;
        self.decisions_seen = std::fs::metadata(self.dir.join(DECISIONS_FILE))
            .and_then(|m| m.modified())
            .ok();
        Ok(())
    }

    fn save(&self) {
        let file = OffersFile {
            offers: self.offers.values().cloned().collect(),
        };
        if let Err(e) = write_json(&self.dir, OFFERS_FILE, &file) {
            tracing::warn!(error = %e, "could not write the offers file");
        }
    }
}

/// Acts on a running node's offers until it stops: joins what is accepted (now, or in
/// [`DECISIONS_FILE`] later, or in `pre_accepted`: `node --dir --library`), ignores what is
/// refused, and hands `report` one line per new offer and per join.
pub fn watch(
    node: NodeHandle,
    dir: &Path,
    pre_accepted: Vec<LibraryId>,
    report: impl Fn(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut book = OfferBook::open(dir);
    let mut events = node.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            let join = tokio::select! {
                event = events.recv() => match event {
                    Ok(NodeEvent::Offered { peer, library }) => {
                        let verdict = if pre_accepted.contains(&library) {
                            Verdict::Join
                        } else {
                            book.offered(&peer, library)
                        };
                        match verdict {
                            Verdict::Join => vec![library],
                            Verdict::Ignore => Vec::new(),
                            Verdict::Wait { new } => {
                                if new {
                                    report(format!(
                                        "offered {library} by {peer}: waiting for approval \
                                         (harpbridge offers accept {library})"
                                    ));
                                }
                                Vec::new()
                            }
                        }
                    }
                    Ok(NodeEvent::Pulled { library, .. }) => {
                        book.held(&library);
                        Vec::new()
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => Vec::new(),
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let accepted = book.reload();
                    for library in &accepted {
                        report(format!("accepted {library}: joining"));
                    }
                    accepted
                }
            };
            for library in join {
                if node.join(library).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// The offers on record in `dir` (for `offers list`).
pub fn read_offers(dir: &Path) -> std::io::Result<Vec<Offer>> {
    let mut offers = read_json::<OffersFile>(&dir.join(OFFERS_FILE), MAX_FILE_LEN)?.offers;
    offers.sort_by_key(|o| o.first_ms);
    Ok(offers)
}

/// The decisions on record in `dir`.
pub fn read_decisions(dir: &Path) -> std::io::Result<Decisions> {
    read_json(&dir.join(DECISIONS_FILE), MAX_FILE_LEN)
}

/// Accepts (or refuses) `library` in `dir`'s decisions file.
pub fn decide(dir: &Path, library: LibraryId, accept: bool) -> std::io::Result<()> {
    let mut d = read_decisions(dir)?;
    let key = library.to_hex();
    d.accepted.remove(&key);
    d.rejected.remove(&key);
    if accept {
        d.accepted.insert(key);
    } else {
        d.rejected.insert(key);
    }
    write_json(dir, DECISIONS_FILE, &d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn an_offer_waits_until_decided_and_the_decision_holds_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (lib, p) = (LibraryId([7; 16]), peer());
        let mut book = OfferBook::open(dir.path());
        assert_eq!(book.offered(&p, lib), Verdict::Wait { new: true });
        assert_eq!(book.offered(&p, lib), Verdict::Wait { new: false });
        assert_eq!(read_offers(dir.path()).unwrap()[0].library, lib.to_hex());

        // The command line accepts; the running book sees it on reload.
        decide(dir.path(), lib, true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(book.reload(), vec![lib]);
        assert_eq!(book.offered(&p, lib), Verdict::Join);
        assert!(book.pending().is_empty());

        decide(dir.path(), lib, false).unwrap();
        let mut again = OfferBook::open(dir.path());
        assert_eq!(again.offered(&p, lib), Verdict::Ignore);
    }

    #[test]
    fn a_flood_of_offers_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = OfferBook::open(dir.path());
        for i in 0..(MAX_OFFERS as u16 + 50) {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&i.to_be_bytes());
            for _ in 0..(MAX_PEERS + 3) {
                book.offered(&peer(), LibraryId(id));
            }
        }
        let offers = read_offers(dir.path()).unwrap();
        assert!(offers.len() <= MAX_OFFERS);
        assert!(offers.iter().all(|o| o.peers.len() <= MAX_PEERS));
    }

    #[test]
    fn a_damaged_file_is_an_error_for_the_cli_and_empty_for_the_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DECISIONS_FILE), b"{not json").unwrap();
        assert!(read_decisions(dir.path()).is_err());
        let mut book = OfferBook::open(dir.path());
        assert_eq!(
            book.offered(&peer(), LibraryId([1; 16])),
            Verdict::Wait { new: true }
        );
    }
}
