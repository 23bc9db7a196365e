//! The chunked body decoder: any split of the input decodes alike, and what it encodes
//! decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::framing::{ChunkStep, ChunkedDecoder, FramingError};

/// Decodes `input` fed in pieces of the given sizes (cycled): the data, and where the body
/// ended (None: not yet).
fn decode(input: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Option<usize>), FramingError> {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    let (mut fed, mut taken) = (0, 0);
    let mut sizes = pieces.iter().copied().cycle();
    while fed < input.len() || taken < fed {
        if taken == fed {
            fed = (fed + sizes.next().unwrap_or(1).max(1)).min(input.len());
        }
        match decoder.step(&input[taken..fed])? {
            ChunkStep::Framing(0) if fed == input.len() => break,
            ChunkStep::Framing(0) => fed = (fed + 1).min(input.len()),
            ChunkStep::Framing(n) => taken += n,
            ChunkStep::Data(n) => {
                assert!(n > 0);
                out.extend_from_slice(&input[taken..taken + n]);
                taken += n;
            }
            ChunkStep::End(n) => {
                assert!(decoder.is_done());
                return Ok((out, Some(taken + n)));
            }
        }
        assert!(taken <= fed);
    }
    Ok((out, None))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    // The same bytes whole, byte by byte, and in pieces the first byte picks.
    let whole = decode(input, &[input.len().max(1)]);
    let bytes = decode(input, &[1]);
    let pieces = decode(
        input,
        &[usize::from(split % 17) + 1, usize::from(split / 17) + 1],
    );
    match (&whole, &bytes, &pieces) {
        (Ok(a), Ok(b), Ok(c)) => {
            assert_eq!(a, b);
            assert_eq!(a, c);
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(a, b);
            assert_eq!(a, c);
        }
        _ => panic!("{whole:?} / {bytes:?} / {pieces:?}"),
    }
    // The input as a payload, chunked in sizes the first byte picks, decodes back to it.
    let size = usize::from(split) + 1;
    let mut wire = Vec::new();
    for chunk in input.chunks(size) {
        wire.extend_from_slice(format!("{:X};e=\"v\"\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nt: 1\r\n\r\n");
    assert_eq!(
        decode(&wire, &[size]),
        Ok((input.to_vec(), Some(wire.len())))
    );
});
