//! One provider's stream during a fetch: the worker writes what the coordinator
//! ([`super::fetch`]) asks, reads the answers in order and reports them.
//!
//! Answers come in request order (see [`super::wire`]), so the worker keeps a queue of what
//! each outstanding request expects: the writer pushes an expectation before it writes a
//! request, the reader pops one before it reads an answer and reads at most that many
//! bytes. Anything else (a block of the wrong size or index, an answer of the wrong kind,
//! bytes that do not decode) is a broken protocol and the provider is excluded; an I/O error
//! or a closed stream means it went away.

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
    let mut control = blocks.control.clone();
    let stream = match control
        .open_stream(peer, StreamProtocol::new(wire::PROTOCOL))
        .await
    {
        Ok(s) => s,
        Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
            let _ = tx.send(FromWorker::NoProtocol(peer));
            return;
        }
        Err(e) => {
            let _ = tx.send(FromWorker::Gone(peer, e.to_string()));
            return;
        }
    };
    let (mut rd, mut wr) = stream.split();
    let (expect_tx, mut expect_rx) = mpsc::unbounded_channel::<Expect>();
    let writer = async move {
        use libp2p::futures::AsyncWriteExt;
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            // Write everything queued, then flush once.
            while let Some(m) = next {
                let (ask, expect) = match m {
                    ToWorker::Want { send_manifest } => (
                        Ask::Want {
                            library,
                            content,
                            send_manifest,
                        },
                        Expect::Have,
                    ),
                    ToWorker::Get { index, size } => {
                        (Ask::Get { index }, Expect::Block { index, size })
                    }
                };
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
    let meter = blocks.meter.clone();
    let reader_tx = tx.clone();
    let reader = async move {
        while let Some(expect) = expect_rx.recv().await {
            let max = match expect {
                Expect::Have => wire::MAX_HAVE_BYTES,
                Expect::Block { size, .. } => 5 + size as usize,
            };
            let answer = match wire::read_answer(&mut rd, max).await {
                Ok(Some(a)) => a,
                Ok(None) => return Err("the provider closed the stream".to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let _ = reader_tx.send(FromWorker::Broken(peer, e.to_string()));
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            };
            let msg = match (expect, answer) {
                (_, Answer::Refused(r)) => {
                    let _ = reader_tx.send(FromWorker::Refused(peer, r));
                    return Ok(());
                }
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
                    let _ = reader_tx.send(FromWorker::Broken(
                        peer,
                        format!("answered {what} out of order ({expect:?} expected)"),
                    ));
                    return Ok(());
                }
            };
            if reader_tx.send(msg).is_err() {
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
