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
//! The first lane carries the `Want`s and their `Have`s. Once blocks are asked, up to
//! `LANES` streams share the `Get`s, each block on the lane with the fewest bytes asked:
//! one stream's flow-control window is too small to keep a LAN link busy. A stream closed
//! before its first answer is opened again (`OPEN_ATTEMPTS`): providers drop streams they
//! cannot take at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;

use crate::chain::{ContentId, LibraryId};
use crate::p2p::trust::Refusal;

use super::wire::{self, Answer, Ask, Have};
use super::Blocks;

/// What a worker tells the coordinator.
#[derive(Debug)]
pub(super) enum FromWorker {
    Have(PeerId, Have),
    Block(PeerId, u32, Vec<u8>),
    Missing(PeerId, u32),
    Refused(PeerId, Refusal),
    /// The peer does not speak `/harp/blocks/1`.
    NoProtocol(PeerId),
    /// The stream failed or ended (the provider went away).
    Gone(PeerId, String),
    /// The provider broke the protocol: excluded.
    Broken(PeerId, String),
}

/// What the coordinator asks a worker to send.
#[derive(Debug, Clone, Copy)]
pub(super) enum ToWorker {
    Want { send_manifest: bool },
    Get { index: u32, size: u32 },
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
            Expect::Have,
        ),
        ToWorker::Get { index, size } => (Ask::Get { index }, Expect::Block { index, size }),
    };
    let Some(first) = rx.recv().await else {
        return;
    };
    let (first_ask, first_expect) = ask(first);
    // The first request is sent, and its answer read, before the stream is handed to the
    // writer and reader below: a stream that closes before that is opened again.
    let mut attempt = 0;
    let (stream, first_answer) = loop {
        attempt += 1;
        let why = match first_exchange(&blocks, peer, &first_ask, first_expect).await {
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
    let (lane, run) = Lane::start(stream, peer, library, &tx, &meter);
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
                        let (ask, expect) = ask(ToWorker::Want { send_manifest: false });
                        opening.push(async move {
                            first_exchange(&blocks, peer, &ask, expect).await
                        });
                    }
                }
                // A `Want` goes on the first lane (its `Have` answers the coordinator), a
                // `Get` on the lane with the fewest bytes asked.
                let i = match m {
                    ToWorker::Want { .. } => 0,
                    ToWorker::Get { .. } => (0..lanes.len())
                        .min_by_key(|&i| lanes[i].asked.load(Ordering::Relaxed))
                        .unwrap_or(0),
                };
                lanes[i].send(ask(m));
            }
            Some(done) = opening.next() => {
                // An extra lane that cannot open, or is refused, is simply not used.
                if let Ok(Some((stream, Answer::Have(_)))) = done {
                    let (lane, run) = Lane::start(stream, peer, library, &tx, &meter);
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

/// One stream to the provider: the queue of requests its writer sends, and the bytes of
/// blocks asked on it and not yet answered.
struct Lane {
    queue: mpsc::UnboundedSender<(Ask, Expect)>,
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
    ) -> (Lane, Running) {
        let (mut rd, mut wr) = stream.split();
        let (queue, mut queued) = mpsc::unbounded_channel::<(Ask, Expect)>();
        let (expect_tx, mut expect_rx) = mpsc::unbounded_channel::<Expect>();
        let asked = Arc::new(AtomicU64::new(0));
        let pacer = meter.clone();
        let writer = async move {
            while let Some(first) = queued.recv().await {
                let mut next = Some(first);
                while let Some((ask, expect)) = next {
                    // A block is asked for only once the WAN limit allows its bytes (see
                    // `pace`): the provider sends it as soon as it is asked, so pacing the
                    // asks paces what crosses the WAN. (Pacing the reads instead lets the
                    // transport's buffers fill at the link's rate first: 1.09x the limit
                    // measured on the lab's gateway.) What is asked so far goes out first.
                    if let Expect::Block { size, .. } = expect {
                        if pacer.paces_in(&library, &peer) {
                            wr.flush().await?;
                            pacer.pace_in(&library, &peer, u64::from(size)).await;
                        }
                    }
                    if expect_tx.send(expect).is_err() {
                        return Ok(());
                    }
                    wire::write_ask(&mut wr, &ask).await?;
                    next = queued.try_recv().ok();
                }
                wr.flush().await?;
            }
            wr.close().await
        };
        let (tx, meter, lane_asked) = (tx.clone(), meter.clone(), asked.clone());
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
                if let Expect::Block { size, .. } = expect {
                    lane_asked.fetch_sub(u64::from(size), Ordering::Relaxed);
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
    fn send(&self, (ask, expect): (Ask, Expect)) {
        if let Expect::Block { size, .. } = expect {
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

/// Opens a stream to `peer`, sends `ask` and reads its answer; `None` if the provider closed
/// the stream before answering.
async fn first_exchange(
    blocks: &Blocks,
    peer: PeerId,
    ask: &Ask,
    expect: Expect,
) -> Result<Option<(libp2p::Stream, Answer)>, Opened> {
    let mut control = blocks.control.clone();
    let mut stream = match control
        .open_stream(peer, StreamProtocol::new(wire::PROTOCOL))
        .await
    {
        Ok(s) => s,
        Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
            return Err(Opened::NoProtocol)
        }
        Err(e) => return Err(Opened::Failed(e.to_string())),
    };
    let failed = |e: std::io::Error| Opened::Failed(e.to_string());
    wire::write_ask(&mut stream, ask).await.map_err(failed)?;
    stream.flush().await.map_err(failed)?;
    match read(&mut stream, expect).await {
        Ok(Some(a)) => Ok(Some((stream, a))),
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
        (_, other) => {
            let what = match other {
                Answer::Have(_) => "Have",
                Answer::Block { .. } => "Block",
                Answer::Missing { .. } => "Missing",
                Answer::Refused(_) => "Refused",
            };
            let why = format!("answered {what} out of order ({expect:?} expected)");
            return (FromWorker::Broken(peer, why), true);
        }
    };
    (msg, false)
}
