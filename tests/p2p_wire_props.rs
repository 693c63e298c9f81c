//! Property tests of every decoder a peer reaches besides chain entries (those are in
//! tests/chain_props.rs): `/harp/sync/1` bodies and frames, `/harp/blocks/2` requests and
//! answers, gossip head announcements. The same properties the fuzz targets check
//! (fuzz/README.md), so `cargo test` covers them without cargo-fuzz: no input panics or
//! makes an allocation sized by a length it claims, and whatever is accepted re-encodes to
//! the same bytes (except a refusal reason this version does not know, which reads as
//! `Internal`). The fuzz seeds are checked to decode, so they stay valid seeds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use harpbridge::chain::{ContentId, DeviceKey, Entry, EntryHash, LibraryId};
use harpbridge::p2p::blocks::wire::{
    read_answer, read_ask, write_answer, write_ask, Answer, Ask, Bits, Have, MAX_BLOCK_BYTES,
    MAX_HAVE_BYTES,
};
use harpbridge::p2p::codec::SyncCodec;
use harpbridge::p2p::gossip::{decode_heads, encode_heads};
use harpbridge::p2p::message::{
    LibraryHeads, Request, Response, MAX_HEADS, MAX_RESPONSE_BYTES, PROTOCOL,
};
use harpbridge::p2p::Refusal;
use libp2p::futures::executor::block_on;
use libp2p::futures::io::Cursor;
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use proptest::prelude::*;

/// The system allocator, noting the largest single allocation made on each thread, so a
/// property can tell a decoder that trusts a claimed length.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `const` and no destructor: the thread-local itself never allocates.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The most any decoder allocates at once by design: one `/harp/sync/1` response frame.
const MOST_ALLOCATED: usize = MAX_RESPONSE_BYTES;

/// Runs `f`, asserting it made no single allocation over [`MOST_ALLOCATED`].
fn bounded<R>(f: impl FnOnce() -> R) -> R {
    LARGEST.with(|l| l.set(0));
    let r = f();
    let largest = LARGEST.with(|l| l.get());
    assert!(
        largest <= MOST_ALLOCATED,
        "allocated {largest} bytes at once"
    );
    r
}

fn refused_unknown_reason(body: &[u8]) -> bool {
    body.len() == 2 && !(1..=3).contains(&body[1])
}

/// Whatever `Request::decode` and `Response::decode` accept re-encodes to `body`.
fn check_sync_body(body: &[u8]) {
    if let Ok(r) = bounded(|| Request::decode(body)) {
        assert_eq!(r.encode(), body, "non-canonical request {r:?}");
    }
    if let Ok(r) = bounded(|| Response::decode(body)) {
        let again = r.encode();
        assert_eq!(Response::decode(&again).as_ref(), Ok(&r));
        if again != body {
            assert!(
                r == Response::Refused(Refusal::Internal) && refused_unknown_reason(body),
                "non-canonical response {r:?}"
            );
        }
    }
}

/// `bytes` as a stream through the request-response codec: whatever frame it accepts
/// re-encodes to the bytes it read.
fn check_sync_stream(bytes: &[u8]) {
    let p = StreamProtocol::new(PROTOCOL);
    let mut io = Cursor::new(bytes);
    if let Ok(r) = bounded(|| block_on(SyncCodec.read_request(&p, &mut io))) {
        let frame = &bytes[..io.position() as usize];
        let mut out = Cursor::new(Vec::new());
        block_on(SyncCodec.write_request(&p, &mut out, r)).unwrap();
        assert_eq!(out.get_ref(), frame);
    }
    let mut io = Cursor::new(bytes);
    if let Ok(r) = bounded(|| block_on(SyncCodec.read_response(&p, &mut io))) {
        let frame = &bytes[..io.position() as usize];
        let mut out = Cursor::new(Vec::new());
        block_on(SyncCodec.write_response(&p, &mut out, r.clone())).unwrap();
        if out.get_ref() != frame {
            assert!(
                r == Response::Refused(Refusal::Internal) && refused_unknown_reason(&frame[4..]),
                "non-canonical response frame {r:?}"
            );
        }
    }
}

/// Bits counted one by one below the length.
fn bits_set(b: &Bits) -> u32 {
    (0..b.len()).map(|i| u32::from(b.get(i))).sum()
}

/// `stream` read as a provider reads requests and as a fetcher reads answers (limit `max`),
/// frame after frame until it ends or breaks; every frame accepted re-encodes to its bytes.
/// Returns how many frames each reader accepted and whether it reached the clean end.
fn check_blocks_stream(stream: &[u8], max: usize) -> ((usize, bool), (usize, bool)) {
    let mut io = Cursor::new(stream);
    let mut asks = (0, false);
    loop {
        let start = io.position() as usize;
        match bounded(|| block_on(read_ask(&mut io))) {
            Ok(Some(a)) => {
                let mut out = Cursor::new(Vec::new());
                block_on(write_ask(&mut out, &a)).unwrap();
                assert_eq!(out.get_ref(), &stream[start..io.position() as usize]);
                asks.0 += 1;
            }
            Ok(None) => {
                assert_eq!(start, stream.len());
                asks.1 = true;
                break;
            }
            Err(_) => break,
        }
    }
    let mut io = Cursor::new(stream);
    let mut answers = (0, false);
    loop {
        let start = io.position() as usize;
        match bounded(|| block_on(read_answer(&mut io, max))) {
            Ok(Some(a)) => {
                let frame = &stream[start..io.position() as usize];
                assert!(frame.len() - 4 <= max);
                if let Answer::Have(h) = &a {
                    assert_eq!(h.have.len(), h.fetching.len());
                    assert_eq!(h.have.count(), bits_set(&h.have));
                    assert_eq!(h.fetching.count(), bits_set(&h.fetching));
                }
                let mut out = Cursor::new(Vec::new());
                block_on(write_answer(&mut out, &a)).unwrap();
                let out = out.into_inner();
                let again = block_on(read_answer(&mut Cursor::new(&out[..]), max));
                assert_eq!(again.ok().flatten().as_ref(), Some(&a));
                if out != frame {
                    assert!(
                        a == Answer::Refused(Refusal::Internal)
                            && refused_unknown_reason(&frame[4..]),
                        "non-canonical answer {a:?}"
                    );
                }
                answers.0 += 1;
            }
            Ok(None) => {
                assert_eq!(start, stream.len());
                answers.1 = true;
                break;
            }
            Err(_) => break,
        }
    }
    (asks, answers)
}

/// The answer limit a fuzz input's first byte picks (as fuzz/fuzz_targets/blocks_wire.rs).
fn pick_limit(pick: u8) -> usize {
    match pick % 3 {
        0 => MAX_HAVE_BYTES,
        1 => MAX_BLOCK_BYTES,
        _ => 5 + usize::from(pick),
    }
}

/// Real entries: the chain's golden vectors (the chain fuzz target's seeds).
fn sample_entries() -> Vec<Entry> {
    [
        &include_bytes!("../fuzz/seeds/chain_decode/golden-0.bin")[..],
        include_bytes!("../fuzz/seeds/chain_decode/golden-1.bin"),
        include_bytes!("../fuzz/seeds/chain_decode/golden-2.bin"),
        include_bytes!("../fuzz/seeds/chain_decode/golden-3.bin"),
    ]
    .iter()
    .map(|b| Entry::from_bytes(b).unwrap())
    .collect()
}

fn library() -> impl Strategy<Value = LibraryId> {
    any::<[u8; 16]>().prop_map(LibraryId)
}

fn heads() -> impl Strategy<Value = LibraryHeads> {
    (
        library(),
        prop::collection::vec(any::<[u8; 32]>().prop_map(EntryHash), 0..4),
    )
        .prop_map(|(library, heads)| LibraryHeads { library, heads })
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::NotAMember),
        Just(Refusal::NotADevice),
        Just(Refusal::Internal)
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Libraries),
        (
            library(),
            prop::collection::vec((any::<[u8; 32]>().prop_map(DeviceKey), any::<u64>()), 0..4),
            any::<u32>()
        )
            .prop_map(|(library, have, limit)| Request::Fetch {
                library,
                have,
                limit
            }),
        heads().prop_map(Request::Announce),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        prop::collection::vec(heads(), 0..4).prop_map(Response::Libraries),
        (
            prop::sample::subsequence(sample_entries(), 0..=4),
            any::<u64>()
        )
            .prop_map(|(entries, remaining)| Response::Entries { entries, remaining }),
        Just(Response::Ack),
        refusal().prop_map(Response::Refused),
    ]
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        (library(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(library, c, send_manifest)| {
            Ask::Want {
                library,
                content: ContentId(c),
                send_manifest,
            }
        }),
        any::<u32>().prop_map(|index| Ask::Get { index }),
        any::<u32>().prop_map(|index| Ask::Cancel { index }),
    ]
}

fn bits(n: u32) -> impl Strategy<Value = Bits> {
    prop::collection::vec(any::<bool>(), n as usize).prop_map(move |set| {
        let mut b = Bits::new(n);
        for (i, s) in set.into_iter().enumerate() {
            if s {
                b.set(i as u32);
            }
        }
        b
    })
}

fn answer() -> impl Strategy<Value = Answer> {
    let have = (0..40u32).prop_flat_map(|n| {
        (
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            bits(n),
            bits(n),
            any::<bool>(),
        )
            .prop_map(|(manifest, have, fetching, starting)| {
                Answer::Have(Have {
                    manifest,
                    have,
                    fetching,
                    starting,
                })
            })
    });
    prop_oneof![
        have,
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(index, bytes)| Answer::Block { index, bytes }),
        any::<u32>().prop_map(|index| Answer::Missing { index }),
        refusal().prop_map(Answer::Refused),
        any::<u32>().prop_map(|index| Answer::Cancelled { index }),
    ]
}

/// Edits `bytes` in place at the given positions (wrapped to its length).
fn mutate(bytes: &mut [u8], edits: &[(prop::sample::Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (at, b) in edits {
        let k = at.index(bytes.len());
        bytes[k] = *b;
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Random bytes, as a sync body, a sync stream, a blocks stream or a gossip message,
    /// never panic a decoder nor make it allocate what they claim.
    #[test]
    fn random_bytes_are_errors_or_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        pick in any::<u8>(),
    ) {
        check_sync_body(&bytes);
        check_sync_stream(&bytes);
        check_blocks_stream(&bytes, pick_limit(pick));
        if let Ok(h) = decode_heads(&bytes) {
            prop_assert!(!h.is_empty() && h.len() <= MAX_HEADS);
            prop_assert_eq!(encode_heads(&h), bytes);
        }
    }

    /// Any length prefix (4 GiB included) followed by a few bytes: an error or a frame,
    /// never an allocation of what the prefix claims.
    #[test]
    fn claimed_lengths_are_not_trusted(
        len in prop_oneof![any::<u32>(), Just(u32::MAX), 0..600u32],
        tail in prop::collection::vec(any::<u8>(), 0..64),
        pick in any::<u8>(),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend(tail);
        check_sync_stream(&bytes);
        check_blocks_stream(&bytes, pick_limit(pick));
    }

    /// Valid sync messages round-trip as bodies and as frames; every truncation is an
    /// error; with bytes changed, whatever still decodes is canonical.
    #[test]
    fn sync_messages_round_trip_and_mutations_are_canonical(
        req in request(),
        resp in response(),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let p = StreamProtocol::new(PROTOCOL);
        let body = req.encode();
        prop_assert_eq!(Request::decode(&body), Ok(req.clone()));
        prop_assert!(Request::decode(&body[..cut.index(body.len())]).is_err());
        let mut io = Cursor::new(frame(&body));
        prop_assert_eq!(block_on(SyncCodec.read_request(&p, &mut io)).unwrap(), req);
        let mut m = body;
        mutate(&mut m, &edits);
        check_sync_body(&m);
        check_sync_stream(&frame(&m));

        let body = resp.encode();
        prop_assert_eq!(Response::decode(&body), Ok(resp.clone()));
        prop_assert!(Response::decode(&body[..cut.index(body.len())]).is_err());
        let mut io = Cursor::new(frame(&body));
        prop_assert_eq!(block_on(SyncCodec.read_response(&p, &mut io)).unwrap(), resp);
        let mut m = body;
        mutate(&mut m, &edits);
        check_sync_body(&m);
        check_sync_stream(&frame(&m));
    }

    /// A stream of valid blocks messages reads back as written, to a clean end; cut inside
    /// a frame it is an error; with bytes changed, whatever still decodes is canonical.
    #[test]
    fn blocks_streams_round_trip_and_mutations_are_canonical(
        asks in prop::collection::vec(ask(), 0..4),
        answers in prop::collection::vec(answer(), 0..4),
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut stream = Cursor::new(Vec::new());
        for a in &asks {
            block_on(write_ask(&mut stream, a)).unwrap();
        }
        let stream = stream.into_inner();
        prop_assert_eq!(check_blocks_stream(&stream, MAX_HAVE_BYTES).0, (asks.len(), true));
        let mut io = Cursor::new(&stream[..]);
        for a in &asks {
            let got = block_on(read_ask(&mut io)).unwrap();
            prop_assert_eq!(got.as_ref(), Some(a));
        }

        let mut stream = Cursor::new(Vec::new());
        for a in &answers {
            block_on(write_answer(&mut stream, a)).unwrap();
        }
        let stream = stream.into_inner();
        prop_assert_eq!(check_blocks_stream(&stream, MAX_HAVE_BYTES).1, (answers.len(), true));
        let mut io = Cursor::new(&stream[..]);
        for a in &answers {
            let got = block_on(read_answer(&mut io, MAX_HAVE_BYTES)).unwrap();
            prop_assert_eq!(got.as_ref(), Some(a));
        }
        if !stream.is_empty() {
            // Cut after the first frame's length prefix started: inside some frame.
            let n = cut.index(stream.len());
            let mut io = Cursor::new(&stream[..n]);
            let clean = loop {
                match block_on(read_answer(&mut io, MAX_HAVE_BYTES)) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            let boundaries = answers.iter().scan(0, |at, a| {
                let mut f = Cursor::new(Vec::new());
                block_on(write_answer(&mut f, a)).unwrap();
                *at += f.get_ref().len();
                Some(*at)
            });
            let on_boundary = n == 0 || boundaries.into_iter().any(|b| b == n);
            prop_assert_eq!(clean, on_boundary);
        }
        let mut m = stream;
        mutate(&mut m, &edits);
        check_blocks_stream(&m, MAX_HAVE_BYTES);
    }

    /// Heads announcements round-trip; any other length is refused.
    #[test]
    fn gossip_heads_round_trip(
        heads in prop::collection::vec(any::<[u8; 32]>().prop_map(EntryHash), 1..20),
        extra in 1..32usize,
    ) {
        let data = encode_heads(&heads);
        prop_assert_eq!(decode_heads(&data), Ok(heads));
        let mut odd = data;
        odd.extend(std::iter::repeat_n(0, extra));
        prop_assert!(decode_heads(&odd).is_err());
    }
}

/// A 4 GiB length prefix and nothing else: refused by both framings without allocating it.
#[test]
fn a_four_gib_claim_is_refused_without_allocating_it() {
    // The tracker sees allocations at all.
    LARGEST.with(|l| l.set(0));
    drop(std::hint::black_box(vec![0u8; 5000]));
    assert!(LARGEST.with(|l| l.get()) >= 5000);

    let p = StreamProtocol::new(PROTOCOL);
    let claim = u32::MAX.to_be_bytes();
    assert!(bounded(|| block_on(SyncCodec.read_response(&p, &mut Cursor::new(claim)))).is_err());
    assert!(bounded(|| block_on(read_answer(&mut Cursor::new(claim), usize::MAX))).is_err());
    // Under the limit, a claim the peer does not send costs at most the first 1 MiB.
    let claim = (MAX_BLOCK_BYTES as u32).to_be_bytes();
    LARGEST.with(|l| l.set(0));
    assert!(block_on(read_answer(&mut Cursor::new(claim), MAX_BLOCK_BYTES)).is_err());
    assert!(LARGEST.with(|l| l.get()) <= 1 << 20);
}

/// Every fuzz seed (fuzz/seeds/) is a valid encoding, so the fuzzers start from messages a
/// peer really sends.
#[test]
fn fuzz_seeds_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let p = StreamProtocol::new(PROTOCOL);
    let files = |target: &str| {
        let mut v: Vec<_> = std::fs::read_dir(dir.join(target))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        assert!(!v.is_empty(), "no seeds for {target}");
        v
    };
    for path in files("sync_wire") {
        let bytes = std::fs::read(&path).unwrap();
        let ok = if path.extension().is_some_and(|e| e == "frame") {
            block_on(SyncCodec.read_request(&p, &mut Cursor::new(&bytes))).is_ok()
                || block_on(SyncCodec.read_response(&p, &mut Cursor::new(&bytes))).is_ok()
        } else {
            Request::decode(&bytes).is_ok() || Response::decode(&bytes).is_ok()
        };
        assert!(ok, "{} does not decode", path.display());
    }
    for path in files("blocks_wire") {
        let bytes = std::fs::read(&path).unwrap();
        let (asks, answers) = check_blocks_stream(&bytes[1..], pick_limit(bytes[0]));
        assert!(
            (asks.0 > 0 && asks.1) || (answers.0 > 0 && answers.1),
            "{} is not a stream of valid frames",
            path.display()
        );
    }
    for path in files("gossip_heads") {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            decode_heads(&bytes).is_ok(),
            "{} does not decode",
            path.display()
        );
    }
}

/// The fuzz build's stand-ins for the manifest bounds (fuzz/src/lib.rs) are the lines of
/// src/content/manifest.rs, so the fuzzers check the limits the server enforces.
#[test]
fn fuzz_stand_ins_match_the_sources() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fuzz = std::fs::read_to_string(root.join("fuzz/src/lib.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("src/content/manifest.rs")).unwrap();
    let consts: Vec<&str> = fuzz
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pub const") && !l.contains("MAX_ALLOCATION"))
        .collect();
    assert_eq!(consts.len(), 5, "{consts:?}");
    for c in consts {
        assert!(
            manifest.lines().any(|l| l.trim() == c),
            "fuzz/src/lib.rs has `{c}`, src/content/manifest.rs does not"
        );
    }
}
