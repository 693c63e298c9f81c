//! `/harp/sync/1` on arbitrary bytes, as a frame body (`Request::decode`,
//! `Response::decode`, src/p2p/message.rs) and as a stream through the request-response
//! codec (length prefix and limits, src/p2p/codec.rs). Never a panic, a hang or an
//! allocation sized by a claimed length (the allocator in fuzz/src/lib.rs aborts on one);
//! what is accepted re-encodes to the same bytes.
#![no_main]

use futures::executor::block_on;
use futures::io::Cursor;
use harpbridge_fuzz::p2p::codec::SyncCodec;
use harpbridge_fuzz::p2p::message::{Request, Response, PROTOCOL};
use harpbridge_fuzz::p2p::trust::Refusal;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;

/// A decoded response round-trips; its bytes are the body's, except that a refusal
/// reason this version does not know (a newer peer's) reads, and so re-encodes, as
/// `Internal`.
fn check_response(r: &Response, body: &[u8]) {
    let again = r.encode();
    assert_eq!(Response::decode(&again).as_ref(), Ok(r));
    if again != body {
        assert!(
            matches!(r, Response::Refused(Refusal::Internal))
                && body.len() == 2
                && !(1..=3).contains(&body[1]),
            "accepted a non-canonical encoding: {r:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data, "accepted a non-canonical encoding");
    }
    if let Ok(r) = Response::decode(data) {
        check_response(&r, data);
    }

    let p = StreamProtocol::new(PROTOCOL);
    block_on(async {
        let mut io = Cursor::new(data);
        if let Ok(r) = SyncCodec.read_request(&p, &mut io).await {
            let frame = &data[..io.position() as usize];
            let mut out = Cursor::new(Vec::new());
            SyncCodec
                .write_request(&p, &mut out, r)
                .await
                .expect("a decoded request is within the limit");
            assert_eq!(out.get_ref(), frame, "accepted a non-canonical frame");
        }
        let mut io = Cursor::new(data);
        if let Ok(r) = SyncCodec.read_response(&p, &mut io).await {
            let frame = &data[..io.position() as usize];
            check_response(&r, &frame[4..]);
            let mut out = Cursor::new(Vec::new());
            SyncCodec
                .write_response(&p, &mut out, r)
                .await
                .expect("a decoded response is within the limit");
            assert_eq!(out.get_ref()[..4], frame[..4]);
        }
    });
});
