//! One provider during a fetch: the worker writes what the coordinator ([`super::fetch`])
//! asks, reads the answers and reports them.
//!
//! Answers come in request order on each stream (see [`super::wire`]), so each stream (a
//! *lane*) keeps a queue of what its outstanding requests expect: the writer pushes an
//! expectation before it writes a request, the lane's reader pops one before it reads an
//! answer and reads at most that many bytes. Anything else (a block of the wrong size or
//! index, an answer of the wrong kind, bytes that do not decode) is a broken protocol and the
//! provider is excluded; an I/O error or a closed stream means it went away.
//!
//! A `Cancel` from the coordinator (the endgame's losing copy) withdraws the block's `Get`
//! if a lane has not written it yet (reported `Cancelled` at once, on either version), and
//! otherwise, on `/harp/blocks/2`, is written on every lane: the lane that asked the block
//! then reads `Cancelled` or the block, whichever the provider sent.
//!
//! The first lane carries the `Want`s and their `Have`s. Once blocks are asked, up to
//! `LANES` streams share the `Get`s, each block on the lane with the fewest bytes asked:
//! one stream's flow-control window is too small to keep a LAN link busy. A stream closed
//! before its first answer is opened again (`OPEN_ATTEMPTS`): providers drop streams they
//! cannot take at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{FuturesUnordered, StreamExt};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;

use crate::chain::{ContentId, LibraryId};
use crate::p2p::trust::Refusal;

use super::wire::{self, Answer, Ask, Have, Version};
use super::Blocks;

/// What a worker tells the coordinator.
#[derive(Debug)]
pub(super) enum FromWorker {
    Have(PeerId, Have),
    Block(PeerId, u32, Vec<u8>),
    Missing(PeerId, u32),
    /// A block the coordinator cancelled was not sent.
    Cancelled(PeerId, u32),
    Refused(PeerId, Refusal),
    /// The peer speaks neither version of `/harp/blocks`.
    NoProtocol(PeerId),
    /// The stream failed or ended (the provider went away).
    Gone(PeerId, String),
    /// The provider broke the protocol: excluded.
    Broken(PeerId, String),
}

/// What the coordinator asks a worker to send.
#[derive(Debug, Clone, Copy)]
pub(super) enum ToWorker {
    Want {
        send_manifest: bool,
    },
    Get {
        index: u32,
        size: u32,
    },
    /// The block's `Get`s sent before this are no longer wanted.
    Cancel {
        index: u32,
    },
}

/// What the next answer on a stream answers.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Have,
    Block { index: u32, size: u32 },
}

/// Times a stream is opened before the provider counts as gone, when it closes before its
/// first answer. A provider drops an inbound stream it cannot take at once (libp2p-stream
/// hands inbound streams over a one-slot channel, and [`super::server::MAX_STREAMS`]), so
/// two fetchers opening streams at the same moment can lose one: opening again is cheap.
const OPEN_ATTEMPTS: u32 = 4;

/// Drives one provider's stream: writes what the coordinator asks, reads the answers in
/// order, and reports them. Ends when the coordinator drops its sender or the stream fails.
pub(super) async fn worker(
    blocks: Blocks,
    peer: PeerId,
    library: LibraryId,
    content: ContentId,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
    tx: mpsc::UnboundedSender<FromWorker>,
) {
    let ask = |m: ToWorker| match m {
        ToWorker::Want { send_manifest } => (
            Ask::Want {
                library,
                content,
                send_manifest,
            },
            Some(Expect::Have),
        ),
        ToWorker::Get { index, size } => (Ask::Get { index }, Some(Expect::Block { index, size })),
        ToWorker::Cancel { index } => (Ask::Cancel { index }, None),
    };
    // The coordinator's first message is a `Want` (a `Cancel` before it has nothing to
    // cancel).
    let (first_ask, first_expect) = loop {
        match rx.recv().await {
            None => return,
            Some(m) => {
                if let (a, Some(e)) = ask(m) {
                    break (a, e);
                }
            }
        }
    };
    // The first request is sent, and its answer read, before the stream is handed to the
    // writer and reader below: a stream that closes before that is opened again.
    let mut attempt = 0;
    let (stream, first_answer, version) = loop {
        attempt += 1;
        let why = match first_exchange(&blocks, peer, None, &first_ask, first_expect).await {
            Ok(Some(done)) => break done,
            Ok(None) => "the provider closed the stream before answering".to_string(),
            Err(Opened::NoProtocol) => {
                let _ = tx.send(FromWorker::NoProtocol(peer));
                return;
            }
            Err(Opened::Broken(why)) => {
                let _ = tx.send(FromWorker::Broken(peer, why));
                return;
            }
            Err(Opened::Failed(why)) => why,
        };
        if attempt >= OPEN_ATTEMPTS {
            let _ = tx.send(FromWorker::Gone(peer, why));
            return;
        }
        tracing::debug!(%peer, attempt, %why, "opening the block stream again");
        tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
    };
    let meter = blocks.meter.clone();
    let (msg, last) = interpret(peer, first_expect, first_answer, &meter);
    if tx.send(msg).is_err() || last {
        return;
    }
    // `Get`s the coordinator cancelled: a lane that has not written one yet drops it.
    let withdrawn = Arc::new(Mutex::new(HashSet::new()));
    let (lane, run) = Lane::start(stream, peer, library, &tx, &meter, &withdrawn);
    let mut lanes = vec![lane];
    // Every lane's writer and reader, polled here: the loop below only routes requests to
    // the lanes' queues, so it never waits on a write while answers wait to be read.
    let mut running = FuturesUnordered::new();
    running.push(run);
    // Extra lanes open once the first `Get` comes: by then the provider holds blocks (and
    // the manifest), so a `Want` on a new stream gets a session with the block list.
    let mut opening = FuturesUnordered::new();
    let mut opened = false;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(m) = msg else { break };
                if !opened && matches!(m, ToWorker::Get { .. }) {
                    opened = true;
                    for _ in 1..LANES {
                        let blocks = blocks.clone();
                        let want = Ask::Want { library, content, send_manifest: false };
                        opening.push(async move {
                            first_exchange(&blocks, peer, Some(version), &want, Expect::Have).await
                        });
                    }
                }
                // A `Want` goes on the first lane (its `Have` answers the coordinator), a
                // `Get` on the lane with the fewest bytes asked, a `Cancel` on every lane
                // (it is ignored where its block was not asked).
                match m {
                    ToWorker::Want { .. } => lanes[0].send(ask(m)),
                    ToWorker::Get { index, .. } => {
                        // Asked again after a cancel: this `Get` is wanted.
                        lock(&withdrawn).remove(&index);
                        let i = (0..lanes.len())
                            .min_by_key(|&i| lanes[i].asked.load(Ordering::Relaxed))
                            .unwrap_or(0);
                        lanes[i].send(ask(m));
                    }
                    ToWorker::Cancel { index } => {
                        lock(&withdrawn).insert(index);
                        if version == Version::V2 {
                            for lane in &lanes {
                                lane.send(ask(m));
                            }
                        }
                    }
                }
            }
            Some(done) = opening.next() => {
                // An extra lane that cannot open, or is refused, is simply not used.
                if let Ok(Some((stream, Answer::Have(_), _))) = done {
                    let (lane, run) = Lane::start(stream, peer, library, &tx, &meter, &withdrawn);
                    running.push(run);
                    lanes.push(lane);
                }
            }
            Some(ended) = running.next() => match ended {
                // The stream's last message (a refusal, a broken protocol) was reported.
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    let _ = tx.send(FromWorker::Gone(peer, e));
                    return;
                }
            },
        }
    }
    // The coordinator is done: the lanes close their streams once their queues are written
    // and read what is still on its way.
    drop(lanes);
    while running.next().await.is_some() {}
}

/// Streams a fetch keeps to one provider. Each stream has its own flow-control window
/// (yamux grants 256 KiB at first and grows it slowly), so one stream leaves a fast LAN link
/// idle while window updates travel; blocks asked on several streams keep it busy.
const LANES: usize = 4;

/// A lane's writer and reader together: `Ok(true)` after a stream's last message was
/// reported, `Ok(false)` when the lane closed, or the error that ended the stream.
type Running = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send>>;

/// The set of withdrawn `Get`s, poisoned or not (it holds plain indices).
fn lock(set: &Mutex<HashSet<u32>>) -> std::sync::MutexGuard<'_, HashSet<u32>> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request for a lane, with what its answer will be (none for a `Cancel`).
type Request = (Ask, Option<Expect>);

/// One stream to the provider: the queue of requests its writer sends, and the bytes of
/// blocks asked on it and not yet answered.
struct Lane {
    queue: mpsc::UnboundedSender<Request>,
    asked: Arc<AtomicU64>,
}

impl Lane {
    /// The lane over `stream`, and the future that runs it: the writer sends the queued
    /// requests (flushing when the queue is empty) and pushes what each expects; the reader
    /// reads the answers in order and reports them on `tx`.
    fn start(
        stream: libp2p::Stream,
        peer: PeerId,
        library: LibraryId,
        tx: &mpsc::UnboundedSender<FromWorker>,
        meter: &crate::p2p::metrics::Meter,
        withdrawn: &Arc<Mutex<HashSet<u32>>>,
    ) -> (Lane, Running) {
        let (mut rd, mut wr) = stream.split();
        let (queue, mut queued) = mpsc::unbounded_channel::<Request>();
        let (expect_tx, mut expect_rx) = mpsc::unbounded_channel::<Expect>();
        let asked = Arc::new(AtomicU64::new(0));
        let pacer = meter.clone();
        let (writer_tx, writer_asked, writer_withdrawn) =
            (tx.clone(), asked.clone(), withdrawn.clone());
        // Whether a `Get` not written yet was cancelled: if so it is reported and dropped.
        let withdraw = move |expect: Option<Expect>| {
            let Some(Expect::Block { index, size }) = expect else {
                return false;
            };
            if !lock(&writer_withdrawn).remove(&index) {
                return false;
            }
            writer_asked.fetch_sub(u64::from(size), Ordering::Relaxed);
            let _ = writer_tx.send(FromWorker::Cancelled(peer, index));
            true
        };
        let writer = async move {
            while let Some(first) = queued.recv().await {
                let mut next = Some(first);
                while let Some((ask, expect)) = next {
                    if withdraw(expect) {
                        next = queued.try_recv().ok();
                        continue;
                    }
                    // A block is asked for only once the WAN limit allows its bytes (see
                    // `pace`): the provider sends it as soon as it is asked, so pacing the
                    // asks paces what crosses the WAN. (Pacing the reads instead lets the
                    // transport's buffers fill at the link's rate first: 1.09x the limit
                    // measured on the lab's gateway.) What is asked so far goes out first.
                    if let Some(Expect::Block { size, .. }) = expect {
                        if pacer.paces_in(&library, &peer) {
                            wr.flush().await?;
                            pacer.pace_in(&library, &peer, u64::from(size)).await;
                            if withdraw(expect) {
                                next = queued.try_recv().ok();
                                continue;
                            }
                        }
                    }
                    if let Some(expect) = expect {
                        if expect_tx.send(expect).is_err() {
                            return Ok(());
                        }
                    }
                    wire::write_ask(&mut wr, &ask).await?;
                    next = queued.try_recv().ok();
                }
                wr.flush().await?;
            }
            wr.close().await
        };
        let (tx, meter, lane_asked) = (tx.clone(), meter.clone(), asked.clone());
        let withdrawn = withdrawn.clone();
        let reader = async move {
            while let Some(expect) = expect_rx.recv().await {
                let answer = match read(&mut rd, expect).await {
                    Ok(Some(a)) => a,
                    Ok(None) => return Err("the provider closed the stream".to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        let _ = tx.send(FromWorker::Broken(peer, e.to_string()));
                        return Ok(true);
                    }
                    Err(e) => return Err(e.to_string()),
                };
                if let Expect::Block { index, size } = expect {
                    lane_asked.fetch_sub(u64::from(size), Ordering::Relaxed);
                    // Answered: a cancel that came too late has nothing left to withdraw.
                    lock(&withdrawn).remove(&index);
                }
                let (msg, last) = interpret(peer, expect, answer, &meter);
                if tx.send(msg).is_err() || last {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let run = async move {
            let writer = async move { writer.await.map_err(|e: std::io::Error| e.to_string()) };
            // The reader decides how the lane ends; the writer only ends it on an error (a
            // reader that reported the stream's last message ends it at once).
            let reader = std::pin::pin!(reader);
            let writer = std::pin::pin!(writer);
            match futures_util::future::select(reader, writer).await {
                futures_util::future::Either::Left((ended, _)) => ended,
                futures_util::future::Either::Right((Err(e), _)) => Err(e),
                futures_util::future::Either::Right((Ok(()), reader)) => reader.await,
            }
        };
        (Lane { queue, asked }, Box::pin(run))
    }

    /// Queues a request; a lane whose writer ended drops it (its reader reports why).
    fn send(&self, (ask, expect): Request) {
        if let Some(Expect::Block { size, .. }) = expect {
            self.asked.fetch_add(u64::from(size), Ordering::Relaxed);
        }
        let _ = self.queue.send((ask, expect));
    }
}

/// Why the first exchange on a new stream failed.
enum Opened {
    NoProtocol,
    Broken(String),
    /// Opening, writing or reading failed: worth another try.
    Failed(String),
}

/// Opens a stream to `peer` (of `version`, or the newest it speaks), sends `ask` and reads
/// its answer; `None` if the provider closed the stream before answering.
async fn first_exchange(
    blocks: &Blocks,
    peer: PeerId,
    version: Option<Version>,
    ask: &Ask,
    expect: Expect,
) -> Result<Option<(libp2p::Stream, Answer, Version)>, Opened> {
    let mut control = blocks.control.clone();
    let tries: &[Version] = match version {
        Some(Version::V1) => &[Version::V1],
        Some(Version::V2) => &[Version::V2],
        None => &[Version::V2, Version::V1],
    };
    let mut opened = None;
    for &v in tries {
        match control
            .open_stream(peer, StreamProtocol::new(v.protocol()))
            .await
        {
            Ok(s) => {
                opened = Some((s, v));
                break;
            }
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {}
            Err(e) => return Err(Opened::Failed(e.to_string())),
        }
    }
    let Some((mut stream, version)) = opened else {
        return Err(Opened::NoProtocol);
    };
    let failed = |e: std::io::Error| Opened::Failed(e.to_string());
    wire::write_ask(&mut stream, ask).await.map_err(failed)?;
    stream.flush().await.map_err(failed)?;
    match read(&mut stream, expect).await {
        Ok(Some(a)) => Ok(Some((stream, a, version))),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Opened::Broken(e.to_string())),
        Err(e) => Err(failed(e)),
    }
}

/// Reads the answer `expect` calls for, bounded by its size.
async fn read<R: libp2p::futures::AsyncRead + Unpin>(
    rd: &mut R,
    expect: Expect,
) -> std::io::Result<Option<Answer>> {
    let max = match expect {
        Expect::Have => wire::MAX_HAVE_BYTES,
        Expect::Block { size, .. } => 5 + size as usize,
    };
    wire::read_answer(rd, max).await
}

/// What an answer tells the coordinator, and whether it is the stream's last (a refusal,
/// or a broken protocol).
fn interpret(
    peer: PeerId,
    expect: Expect,
    answer: Answer,
    meter: &crate::p2p::metrics::Meter,
) -> (FromWorker, bool) {
    let msg = match (expect, answer) {
        (_, Answer::Refused(r)) => return (FromWorker::Refused(peer, r), true),
        (Expect::Have, Answer::Have(h)) => FromWorker::Have(peer, h),
        (Expect::Block { index, size }, Answer::Block { index: i, bytes })
            if i == index && bytes.len() == size as usize =>
        {
            meter.add_in(peer, bytes.len() as u64);
            FromWorker::Block(peer, index, bytes)
        }
        (Expect::Block { index, .. }, Answer::Missing { index: i }) if i == index => {
            FromWorker::Missing(peer, index)
        }
        (Expect::Block { index, .. }, Answer::Cancelled { index: i }) if i == index => {
            FromWorker::Cancelled(peer, index)
        }
        (_, other) => {
            let what = match other {
                Answer::Have(_) => "Have",
                Answer::Block { .. } => "Block",
                Answer::Missing { .. } => "Missing",
                Answer::Refused(_) => "Refused",
                Answer::Cancelled { .. } => "Cancelled",
            };
            let why = format!("answered {what} out of order ({expect:?} expected)");
            return (FromWorker::Broken(peer, why), true);
        }
    };
    (msg, false)
}
