//! `/harp/blocks/2` (and so `/1`) on arbitrary bytes: the provider's request reader
//! (`read_ask`) and the fetcher's answer reader (`read_answer`, src/p2p/blocks/wire.rs),
//! each reading frames off the same stream until it ends or breaks. Never a panic, a hang
//! or an allocation sized by a claimed length (the allocator in fuzz/src/lib.rs aborts on
//! one); every frame accepted re-encodes to the same bytes, and a `Have`'s bitmaps hold no
//! bit past their length.
//!
//! The first byte picks the limit the fetcher reads the answer with (a `Have`, any block,
//! or a small block), as it knows what the next answer answers.
#![no_main]

use futures::executor::block_on;
use futures::io::Cursor;
use harpbridge_fuzz::p2p::blocks::wire::{
    read_answer, read_ask, write_answer, write_ask, Answer, Bits, MAX_BLOCK_BYTES, MAX_HAVE_BYTES,
};
use harpbridge_fuzz::p2p::trust::Refusal;
use libfuzzer_sys::fuzz_target;

/// The set bits, counted one by one below the length.
fn bits_set(b: &Bits) -> u32 {
    (0..b.len()).map(|i| u32::from(b.get(i))).sum()
}

async fn check_answer(a: &Answer, frame: &[u8], max: usize) {
    assert!(frame.len() - 4 <= max, "a frame over the limit was read");
    if let Answer::Have(h) = a {
        assert_eq!(h.have.len(), h.fetching.len());
        assert_eq!(h.have.count(), bits_set(&h.have), "bits past the end");
        assert_eq!(
            h.fetching.count(),
            bits_set(&h.fetching),
            "bits past the end"
        );
    }
    let mut out = Cursor::new(Vec::new());
    write_answer(&mut out, a)
        .await
        .expect("a decoded answer re-encodes");
    let out = out.into_inner();
    let mut again = Cursor::new(&out[..]);
    assert_eq!(
        read_answer(&mut again, max).await.ok().flatten().as_ref(),
        Some(a)
    );
    // Canonical, except that a refusal reason this version does not know (a newer peer's)
    // reads, and so re-encodes, as `Internal`.
    if out != frame {
        assert!(
            matches!(a, Answer::Refused(Refusal::Internal))
                && frame.len() == 6
                && !(1..=3).contains(&frame[5]),
            "accepted a non-canonical encoding: {a:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let max = match pick % 3 {
        0 => MAX_HAVE_BYTES,
        1 => MAX_BLOCK_BYTES,
        _ => 5 + usize::from(pick),
    };
    block_on(async {
        let mut io = Cursor::new(stream);
        loop {
            let start = io.position() as usize;
            match read_ask(&mut io).await {
                Ok(Some(a)) => {
                    let mut out = Cursor::new(Vec::new());
                    write_ask(&mut out, &a)
                        .await
                        .expect("a decoded ask re-encodes");
                    let frame = &stream[start..io.position() as usize];
                    assert_eq!(out.get_ref(), frame, "accepted a non-canonical encoding");
                }
                Ok(None) => {
                    assert_eq!(start, stream.len(), "ended inside the stream");
                    break;
                }
                Err(_) => break,
            }
        }
        let mut io = Cursor::new(stream);
        loop {
            let start = io.position() as usize;
            match read_answer(&mut io, max).await {
                Ok(Some(a)) => check_answer(&a, &stream[start..io.position() as usize], max).await,
                Ok(None) => {
                    assert_eq!(start, stream.len(), "ended inside the stream");
                    break;
                }
                Err(_) => break,
            }
        }
    });
});
