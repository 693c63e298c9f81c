//! One provider's stream during a fetch: the worker writes what the coordinator
//! ([`super::fetch`]) asks, reads the answers in order and reports them.
//!
//! Answers come in request order (see [`super::wire`]), so the worker keeps a queue of what
//! each outstanding request expects: the writer pushes an expectation before it writes a
//! request, the reader pops one before it reads an answer and reads at most that many
//! bytes. Anything else (a block of the wrong size or index, an answer of the wrong kind,
//! bytes that do not decode) is a broken protocol and the provider is excluded; an I/O error
//! or a closed stream means it went away. A stream closed before its first answer is opened
//! again ([`OPEN_ATTEMPTS`]): providers drop streams they cannot take at once.

use libp2p::futures::AsyncReadExt;
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
    let (mut rd, mut wr) = stream.split();
    let (expect_tx, mut expect_rx) = mpsc::unbounded_channel::<Expect>();
    let writer = async move {
        use libp2p::futures::AsyncWriteExt;
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            // Write everything queued, then flush once.
            while let Some(m) = next {
                let (ask, expect) = ask(m);
                if expect_tx.send(expect).is_err() {
                    return Ok(());
                }
                wire::write_ask(&mut wr, &ask).await?;
                next = rx.try_recv().ok();
            }
            wr.flush().await?;
        }
        wr.close().await
    };
    let reader_tx = tx.clone();
    let reader = async move {
        while let Some(expect) = expect_rx.recv().await {
            let answer = match read(&mut rd, expect).await {
                Ok(Some(a)) => a,
                Ok(None) => return Err("the provider closed the stream".to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let _ = reader_tx.send(FromWorker::Broken(peer, e.to_string()));
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            };
            let (msg, last) = interpret(peer, expect, answer, &meter);
            if reader_tx.send(msg).is_err() || last {
                return Ok(());
            }
        }
        Ok(())
    };
    let writer = async move { writer.await.map_err(|e: std::io::Error| e.to_string()) };
    if let Err(e) = tokio::try_join!(writer, reader) {
        let _ = tx.send(FromWorker::Gone(peer, e));
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
    use libp2p::futures::AsyncWriteExt;
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
