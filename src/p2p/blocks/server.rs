//! Answering block streams (`/harp/blocks/2` and `/1`): one task per inbound stream (at
//! most [`MAX_STREAMS`] at once), each serving one version to one peer.
//!
//! The stream's first `Want` decides, on the blocking pool, whether the peer may read the
//! version (`Blocks::references` and the membership check, see the module docs of
//! [`super`]); a refusal is answered and the stream closed. Every later `Want` checks again
//! (a device removed from the library is refused from its next refresh on). `Get`s are
//! answered in order: the block is read and verified by
//! [`crate::content::ContentStore::read_block`] on the blocking pool, so a block that rotted
//! on disk is answered `Missing` (and dropped from the store) rather than sent. The next
//! blocks are read while the current one is written (`READ_AHEAD`).
//!
//! Requests are read as they come, ahead of the answers: a `Cancel` must be seen while the
//! `Get` it cancels still waits its turn behind a window of others, not after it was
//! answered. Each queued `Get` carries a token its `Cancel` fires; the writer answers
//! `Cancelled` for such a `Get` it has not started writing: checked when its turn comes,
//! after the read, and during the upload limit's pause, which can last seconds and which a
//! cancel ends at once (the limit gets the block's bytes back, [`crate::p2p::pace`]). A
//! cancel that comes once the block is paid for is too late: the block is sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chain::{ContentId, LibraryId};
use crate::content::{BlockRef, ContentError, ManifestId};
use crate::p2p::trust::Refusal;

use super::wire::{self, Answer, Ask, Bits, Have, Version};
use super::Blocks;

/// Inbound block streams served at once, of both versions; more are closed at once (the
/// fetcher sees the provider vanish and asks another).
pub const MAX_STREAMS: usize = 256;

/// Serves inbound streams of both versions until the swarm goes away.
pub async fn serve(
    blocks: Blocks,
    v2: libp2p_stream::IncomingStreams,
    v1: libp2p_stream::IncomingStreams,
) {
    let limit = Arc::new(Semaphore::new(MAX_STREAMS));
    let mut incoming = libp2p::futures::stream::select(
        v2.map(|(peer, s)| (peer, s, Version::V2)),
        v1.map(|(peer, s)| (peer, s, Version::V1)),
    );
    while let Some((peer, stream, version)) = incoming.next().await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::info!(%peer, "too many block streams, closing one");
            continue;
        };
        let blocks = blocks.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_stream(&blocks, peer, stream, version).await {
                tracing::debug!(%peer, error = %e, "block stream ended with an error");
            }
        });
    }
}

/// The version a stream serves, once a `Want` was granted.
struct Session {
    library: LibraryId,
    content: ContentId,
    /// The manifest's block list (empty while this node lacks the manifest).
    blocks: Vec<BlockRef>,
    /// The synced file that holds the version, if one does ([`super::PlacedFiles`]).
    file: Option<std::path::PathBuf>,
    /// With `file`: where each block starts in it (summed once, not per `Get`: a large
    /// file has hundreds of thousands of blocks).
    offsets: Vec<u64>,
}

/// A request's answer, queued in request order for the writer.
enum Queued {
    /// Written as is; `last`: the stream closes after it (a refusal).
    Ready { answer: Answer, last: bool },
    /// Block `index`: read when its turn nears, unless cancelled first.
    Get {
        library: LibraryId,
        index: u32,
        block: BlockRef,
        /// The synced file holding it, and where.
        placed: Option<(std::path::PathBuf, u64)>,
        cancelled: Arc<CancellationToken>,
    },
}

/// A queued answer the writer has started on.
enum Started {
    Ready {
        answer: Answer,
        last: bool,
    },
    /// Block `index`, being read and verified on the blocking pool.
    Reading {
        library: LibraryId,
        index: u32,
        read: JoinHandle<Result<Vec<u8>, ContentError>>,
        cancelled: Arc<CancellationToken>,
    },
}

/// Blocks read ahead of the one being written, so the link never waits for the disk. A
/// stream holds at most this many blocks plus the one being written.
const READ_AHEAD: usize = 2;

/// Requests read ahead of their answers. A fetcher's window is at most a few hundred
/// blocks; past this the reader waits (and a `Cancel` behind it is seen later).
const QUEUED: usize = 4096;

/// Serves one stream: the reader half checks each request and queues its answer, the
/// writer half reads blocks a little ahead and writes the answers in request order.
async fn serve_stream(
    blocks: &Blocks,
    peer: PeerId,
    stream: Stream,
    version: Version,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.split();
    let (tx, mut rx) = mpsc::channel::<Queued>(QUEUED);
    let reader = async move {
        let mut session: Option<Session> = None;
        // The tokens of `Get`s not yet answered, by index (a `Get` answered drops its token,
        // so a dead entry means "nothing to cancel"; dead entries are pruned as they pile).
        let mut cancels: HashMap<u32, Weak<CancellationToken>> = HashMap::new();
        while let Some(ask) = wire::read_ask(&mut rd).await? {
            let next = match ask {
                Ask::Want {
                    library,
                    content,
                    send_manifest,
                } => {
                    if session
                        .as_ref()
                        .is_some_and(|s| (s.library, s.content) != (library, content))
                    {
                        return Err(invalid("one version per stream"));
                    }
                    let b = blocks.clone();
                    let (answer, list) = tokio::task::spawn_blocking(move || {
                        have(&b, &peer, library, content, send_manifest)
                    })
                    .await
                    .unwrap_or((Answer::Refused(Refusal::Internal), None));
                    let last = list.is_none();
                    if let Some((list, file)) = list {
                        let offsets = match file {
                            Some(_) => list
                                .iter()
                                .scan(0u64, |at, b| {
                                    let start = *at;
                                    *at += u64::from(b.size);
                                    Some(start)
                                })
                                .collect(),
                            None => Vec::new(),
                        };
                        session = Some(Session {
                            library,
                            content,
                            blocks: list,
                            file,
                            offsets,
                        });
                    }
                    Queued::Ready { answer, last }
                }
                Ask::Get { index } => {
                    let Some(s) = &session else {
                        return Err(invalid("Get before Want"));
                    };
                    let Some(block) = s.blocks.get(index as usize).copied() else {
                        return Err(invalid("Get of a block the manifest does not list"));
                    };
                    let cancelled = Arc::new(CancellationToken::new());
                    if cancels.len() >= 2 * QUEUED {
                        cancels.retain(|_, flag| flag.strong_count() > 0);
                    }
                    // A second `Get` of the same index replaces the first's entry: a
                    // `Cancel` then reaches the later one (the protocol allows either).
                    cancels.insert(index, Arc::downgrade(&cancelled));
                    Queued::Get {
                        library: s.library,
                        index,
                        block,
                        placed: s.file.clone().zip(s.offsets.get(index as usize).copied()),
                        cancelled,
                    }
                }
                Ask::Cancel { index } => {
                    if version == Version::V1 {
                        return Err(invalid("Cancel is not part of /harp/blocks/1"));
                    }
                    if let Some(flag) = cancels.remove(&index).and_then(|f| f.upgrade()) {
                        flag.cancel();
                    }
                    continue;
                }
            };
            let last = matches!(next, Queued::Ready { last: true, .. });
            if tx.send(next).await.is_err() || last {
                break; // the writer stopped, or the stream ends with this refusal
            }
        }
        Ok(())
    };
    let content = blocks.content.clone();
    let start = move |q: Queued| match q {
        Queued::Ready { answer, last } => Started::Ready { answer, last },
        Queued::Get {
            index, cancelled, ..
        } if cancelled.is_cancelled() => Started::Ready {
            answer: Answer::Cancelled { index },
            last: false,
        },
        Queued::Get {
            library,
            index,
            block,
            placed,
            cancelled,
        } => {
            let store = content.clone();
            Started::Reading {
                library,
                index,
                read: tokio::task::spawn_blocking(move || match store.read_block(&block.hash) {
                    Ok(bytes) => Ok(bytes),
                    Err(e) => match &placed {
                        Some((file, offset)) => read_placed(file, *offset, &block).ok_or(e),
                        None => Err(e),
                    },
                }),
                cancelled,
            }
        }
    };
    let meter = blocks.meter.clone();
    let writer = async move {
        let mut ahead: VecDeque<Started> = VecDeque::with_capacity(READ_AHEAD + 1);
        loop {
            if ahead.is_empty() {
                match rx.recv().await {
                    Some(q) => ahead.push_back(start(q)),
                    None => break,
                }
            }
            while ahead.len() <= READ_AHEAD {
                match rx.try_recv() {
                    Ok(q) => ahead.push_back(start(q)),
                    Err(_) => break,
                }
            }
            let Some(next) = ahead.pop_front() else {
                continue;
            };
            let (answer, last) = match next {
                Started::Ready { answer, last } => (answer, last),
                Started::Reading {
                    library,
                    index,
                    read,
                    cancelled,
                } => match read.await {
                    Ok(Ok(bytes)) => {
                        let n = bytes.len() as u64;
                        if !cancelled.is_cancelled()
                            && meter
                                .pace_out(&library, &peer, n, cancelled.cancelled())
                                .await
                        {
                            meter.add_out(peer, n);
                            (Answer::Block { index, bytes }, false)
                        } else {
                            (Answer::Cancelled { index }, false)
                        }
                    }
                    _ => (Answer::Missing { index }, false),
                },
            };
            let started = std::time::Instant::now();
            wire::write_answer(&mut wr, &answer).await?;
            wr.flush().await?;
            if let Answer::Block { index, bytes } = &answer {
                tracing::trace!(%peer, index, size = bytes.len(), took = ?started.elapsed(), "block written");
            }
            if last {
                break;
            }
        }
        wr.close().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// A version a peer may read: its manifest's block list, and the synced file that holds it.
type Readable = (Vec<BlockRef>, Option<std::path::PathBuf>);

/// Block `b` read from a placed file at `offset`, if the file still holds it there.
fn read_placed(file: &std::path::Path, offset: u64, b: &BlockRef) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = vec![0u8; b.size as usize];
    f.read_exact(&mut bytes).ok()?;
    if crate::content::BlockHash::of(&bytes) != b.hash {
        tracing::info!(file = %file.display(), "a synced file changed since it was hashed; its old blocks are not served");
        return None;
    }
    Some(bytes)
}

fn invalid(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// The answer to a `Want`, and the manifest's block list if the peer may read the version
/// (empty if we lack the manifest) with the synced file that holds it, if any. Blocking.
fn have(
    blocks: &Blocks,
    peer: &PeerId,
    library: LibraryId,
    content: ContentId,
    send_manifest: bool,
) -> (Answer, Option<Readable>) {
    if let Err(reason) = blocks.trust.check(peer, &library) {
        tracing::info!(%peer, %library, %reason, "refused a block request");
        return (Answer::Refused(reason), None);
    }
    match blocks.references(&library, &content) {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(%peer, %library, %content, "refused a version the library does not reference");
            return (Answer::Refused(Refusal::NotAMember), None);
        }
        Err(e) => {
            tracing::warn!(%library, error = %e, "reading the chain to serve blocks");
            return (Answer::Refused(Refusal::Internal), None);
        }
    }
    let id = ManifestId::from(content);
    let file = blocks.placed_file(&library, &content);
    let r = (|| -> Result<(Answer, Vec<BlockRef>), crate::content::ContentError> {
        let Some(bytes) = blocks.content.manifest_bytes(&id)? else {
            let have = Have {
                starting: blocks.starting(&id),
                ..Have::default()
            };
            return Ok((Answer::Have(have), Vec::new()));
        };
        let manifest = crate::content::Manifest::decode(&bytes)?;
        // A synced file holds every block (each is checked as it is read).
        let missing: HashSet<_> = match &file {
            Some(_) => HashSet::new(),
            None => blocks
                .content
                .missing_blocks(&id)?
                .into_iter()
                .map(|b| b.hash)
                .collect(),
        };
        // `starting` before `fetching`: a fetch marks its blocks before it stops
        // `starting`, so one of the two is seen.
        let starting = blocks.starting(&id);
        let fetching = blocks.fetching(&id);
        let n = u32::try_from(manifest.blocks.len()).unwrap_or(u32::MAX);
        let mut have = Bits::new(n);
        let mut busy = Bits::new(n);
        for (i, b) in (0..n).zip(&manifest.blocks) {
            if !missing.contains(&b.hash) {
                have.set(i);
            } else if fetching.contains(&b.hash) {
                busy.set(i);
            }
        }
        let answer = Answer::Have(Have {
            manifest: send_manifest.then_some(bytes),
            have,
            fetching: busy,
            // A fetch here stores the manifest a few milliseconds before it marks its
            // blocks as fetching: in between, `busy` is empty but the fetch is coming, and
            // a LAN co-fetcher told "not fetching" would ask the WAN for blocks we take too.
            starting,
        });
        Ok((answer, manifest.blocks))
    })();
    match r {
        Ok((answer, list)) => (answer, Some((list, file))),
        Err(e) => {
            tracing::warn!(%content, error = %e, "reading the content store to serve blocks");
            (Answer::Refused(Refusal::Internal), None)
        }
    }
}
